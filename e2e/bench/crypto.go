package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"runtime"
	"syscall"
	"time"
)

// es256Cost is what one ES256 operation (crypto/ecdsa, P-256, with the
// SHA-256 of a token-sized signing input) costs this machine, in CPU time
// of one thread.
type es256Cost struct {
	verify, sign time.Duration
	err          error
}

// es256Ops is how many of each operation measureES256 times.
const es256Ops = 2000

// measureES256 times n verifications and n signatures on one locked OS
// thread and divides its CPU time (getrusage RUSAGE_THREAD) by n, so other
// work on the machine lengthens the wall time but not the figure. (The
// harness's other goroutines are idle then: the runtime may still run its
// own work on this thread, which counts.)
func measureES256(n int) es256Cost {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return es256Cost{err: err}
	}
	// A signing input as long as the harness's JWTs (about 600 bytes).
	input := make([]byte, 600)
	for i := range input {
		input[i] = 'a' + byte(i%26)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var sig []byte
	sign, err := timeOps(n, func() error {
		h := sha256.Sum256(input)
		var err error
		sig, err = ecdsa.SignASN1(rand.Reader, key, h[:])
		return err
	})
	if err != nil {
		return es256Cost{err: err}
	}
	verify, err := timeOps(n, func() error {
		h := sha256.Sum256(input)
		if !ecdsa.VerifyASN1(&key.PublicKey, h[:], sig) {
			return errVerify
		}
		return nil
	})
	if err != nil {
		return es256Cost{err: err}
	}
	return es256Cost{verify: verify, sign: sign}
}

// timeOps is the CPU time of the calling thread per call of op, n calls;
// the wall time when the thread's CPU time does not move (too coarse a
// clock for a short run).
func timeOps(n int, op func() error) (time.Duration, error) {
	c0, w0 := threadCPU(), time.Now()
	for range n {
		if err := op(); err != nil {
			return 0, err
		}
	}
	d := threadCPU() - c0
	if d <= 0 {
		d = time.Since(w0)
	}
	return d / time.Duration(n), nil
}

var errVerify = errors.New("ES256: a signature just made does not verify")

// threadCPU is the calling OS thread's CPU time (user + system).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
