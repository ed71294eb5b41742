package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisServer is a real redis-server (Debian's package; `make tools`
// installs it) on a free loopback port, without persistence, that a test
// can kill and start again on the same port.
type redisServer struct {
	*process
	port     int
	password string
	dir      string // its working directory (no files are written: no persistence)
}

// needRedis stops a test that runs Redis when redis-server is missing, as
// needTools does for Envoy and Hydra.
func needRedis(t *testing.T) string {
	t.Helper()
	path, err := findTool("redis-server")
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("redis-server not found in .tools/bin or on PATH (%v): run `make tools` (installs Debian's redis-server)", err)
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("%s; skipped because %s=1", msg, skipEnv)
	}
	t.Fatalf("%s, or set %s=1 to skip the end-to-end tests", msg, skipEnv)
	return ""
}

// startRedis starts redis-server on a free loopback port, requiring
// password (none if ""), and waits until it answers PING.
func startRedis(t *testing.T, password string) *redisServer {
	t.Helper()
	if password != "" {
		secrets.add(password)
	}
	r := &redisServer{port: freePort(t), password: password, dir: t.TempDir()}
	r.start(t)
	return r
}

// url is the redis:// URL of the server, database 0; the password goes in
// a file (redis.password_file), not here.
func (r *redisServer) url() string {
	return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
}

// start runs redis-server on r.port and waits for PING to answer.
func (r *redisServer) start(t *testing.T) {
	t.Helper()
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--loglevel", "warning"}
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	r.process = startProcess(t, "redis", nil, []int{r.port}, needRedis(t), args...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.ping()
		if err == nil {
			return
		}
		if r.exited() {
			t.Fatalf("redis-server exited during start-up (%v):\n%s", r.waitErr, r.tail(20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d not answering PING after 10s (last: %v):\n%s", r.port, err, r.tail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends redis-server at once, as a crash would, and waits until its
// port refuses connections.
func (r *redisServer) kill(t *testing.T) {
	t.Helper()
	r.process.kill()
	if err := waitPortFree(r.port, 5*time.Second); err != nil {
		t.Fatalf("redis-server killed but %v", err)
	}
}

// restart starts a new, empty redis-server on the same port (a crashed
// Redis without persistence comes back empty).
func (r *redisServer) restart(t *testing.T) {
	t.Helper()
	if !r.exited() {
		t.Fatal("redis-server restarted while still running")
	}
	r.start(t)
}

// ping sends AUTH (with a password) and PING over RESP and expects +PONG.
func (r *redisServer) ping() error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	rd := bufio.NewReader(c)
	if r.password != "" {
		if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(r.password), r.password); err != nil {
			return err
		}
		if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("AUTH answered %q (%v)", strings.TrimSpace(line), err)
		}
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// The helper itself: a Redis that answers, refuses connections once killed,
// and answers again on the same port after a restart.
func TestRedisHelperKillAndRestart(t *testing.T) {
	t.Parallel()
	needRedis(t)
	r := startRedis(t, "e2e-redis-password-0123456789")
	if err := r.ping(); err != nil {
		t.Fatalf("PING after start: %v", err)
	}
	port := r.port
	r.kill(t)
	if err := r.ping(); err == nil {
		t.Fatal("PING answered after kill")
	}
	r.restart(t)
	if r.port != port {
		t.Fatalf("restarted on port %d, want %d", r.port, port)
	}
	if err := r.ping(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}
