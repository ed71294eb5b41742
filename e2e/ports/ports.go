// Package ports hands the end-to-end tests and the bench loopback TCP ports
// for the programs they start (Hydra, Keycloak, Envoy, phantom-authz, Redis,
// Jaeger), which are told a port and bind it themselves.
//
// A port the kernel picks for 127.0.0.1:0 and that is then closed again is
// not reserved: it lies in the ephemeral range, so any outgoing connection
// on the machine may take it as its source port before the program binds
// it, and another test binary of the same `go test ./...` may be handed it
// too. Both happened in CI ("bind: address already in use"). So the ports
// here come from below the ephemeral range, where the kernel never picks a
// source port, and each is held by an exclusive flock on a file of its own
// for the life of the process that took it, so no two test binaries on the
// machine are ever handed the same one.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// lowest is the first port handed out: above the well-known and most
// registered service ports a developer's machine may be running.
const lowest = 20000

var (
	mu   sync.Mutex
	next int        // the next port to try; 0 before the first call
	held []*os.File // the lock files; open until the process exits
)

// Free returns a loopback TCP port below the ephemeral range that nothing
// listens on now and that no other process using this package holds.
func Free() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	lo, hi := window()
	if next < lo || next >= hi {
		// A random start: test binaries running side by side do not all
		// contend for the same first ports.
		next = lo + rand.IntN(hi-lo)
	}
	dir := lockDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	for range hi - lo {
		port := next
		if next++; next >= hi {
			next = lo
		}
		f, err := claim(dir, port)
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil { // something outside the tests listens there
			f.Close()
			continue
		}
		l.Close()
		held = append(held, f)
		return port, nil
	}
	return 0, fmt.Errorf("ports: no free port in [%d, %d)", lo, hi)
}

// lockDir holds one lock file per port, per user: another user's
// directory could not be written here (the listen probe still keeps clear
// of their ports).
func lockDir() string {
	return filepath.Join(os.TempDir(), "phantom-authz-ports-"+strconv.Itoa(os.Getuid()))
}

// claim takes the exclusive lock of port's file, or fails at once if
// another process (or an earlier call here) holds it.
func claim(dir string, port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// window is the range ports are handed from: [lowest, start of the
// kernel's ephemeral range), or 20000–32767 when the range cannot be read.
func window() (lo, hi int) {
	lo, hi = lowest, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	start, err := strconv.Atoi(f[0])
	if err != nil {
		return lo, hi
	}
	if start-lowest >= 1000 {
		return lo, start
	}
	// An ephemeral range that begins low: hand out ports above it.
	end, err := strconv.Atoi(f[1])
	if err != nil || end+1000 > 65535 {
		return lo, hi
	}
	return end + 1, 65536
}
