package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/e2e/ports"
)

// process is one program a test started, in a process group of its own so
// that stopping it stops its children too.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	ports   []int // the loopback ports it listens on; checked free after it stops
	done    chan struct{}
	waitErr error
}

// startProcess runs path with args (env added to the test's environment),
// its output in a log file that is printed if the test fails and checked
// for secrets. The process group is stopped when the test ends, failed or
// not.
func startProcess(t *testing.T, name string, env []string, ports []int, path string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: should the test binary itself die (panic, timeout), the
	// process does not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, ports: ports, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop() // the whole output, shutdown included
		checkProcessOutput(t, p)
		for _, port := range p.ports {
			if err := waitPortFree(port, 5*time.Second); err != nil {
				t.Errorf("%s stopped but %v", name, err)
			}
		}
		if t.Failed() {
			t.Logf("--- last lines of %s's log ---\n%s", name, p.tail(40))
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5 s, and
// returns how the process ended. Calling it again is harmless.
func (p *process) stop() error {
	if !p.exited() {
		pg := -p.cmd.Process.Pid
		_ = syscall.Kill(pg, syscall.SIGTERM)
		_ = syscall.Kill(pg, syscall.SIGCONT) // a frozen process must wake to see SIGTERM
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(pg, syscall.SIGKILL)
			<-p.done
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // any child left behind
	return p.waitErr
}

// kill ends the process group at once (a crash, as far as its peers can tell).
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the process group.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// freeze stops the process group with SIGSTOP and waits until every thread
// of the process is stopped: kill returns before the stop takes effect.
func (p *process) freeze(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGSTOP)
	deadline := time.Now().Add(5 * time.Second)
	for !p.stopped() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not stopped 5s after SIGSTOP", p.name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped reports whether every thread of the process is in state T
// (stopped), from /proc.
func (p *process) stopped() bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		// "pid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// tail returns the last n lines of the process's output.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP waits until url answers 200, failing early if p exits.
func (p *process) waitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.exited() {
			t.Fatalf("%s exited during start-up (%v):\n%s", p.name, p.waitErr, p.tail(40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s after %s (last: %v):\n%s", p.name, url, timeout, err, p.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port for a program the test starts:
// nobody listens on it, no other test binary is handed it, and no outgoing
// connection takes it as its source port (package ports).
func freePort(t *testing.T) int {
	t.Helper()
	p, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPortFree waits until nothing accepts connections on the loopback port.
func waitPortFree(port int, timeout time.Duration) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d still accepts connections", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
