package ports

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The kernel takes source ports for outgoing connections from the
// ephemeral range; a port handed out there can be taken before the program
// it is meant for binds it.
func TestPortsAreOutsideTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no /proc/sys/net/ipv4/ip_local_port_range here")
	}
	f := strings.Fields(string(b))
	start, _ := strconv.Atoi(f[0])
	end, _ := strconv.Atoi(f[1])
	for range 50 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if p >= start && p <= end {
			t.Fatalf("port %d is in the ephemeral range %d-%d", p, start, end)
		}
	}
}

// Concurrent callers in one process never get the same port, and a port
// someone listens on is never handed out.
func TestPortsAreNeverHandedOutTwice(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(peek(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				p, err := Free()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[p] || p == busyPort {
					t.Errorf("port %d handed out twice or while in use", p)
				}
				seen[p] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// Another test binary (here: this one, run again as a child) cannot be
// handed a port this process holds: the child tries to claim every port
// the parent took and reports the ones it got.
func TestPortsHeldAcrossProcesses(t *testing.T) {
	if list := os.Getenv("PORTS_CLAIM"); list != "" {
		dir := lockDir()
		for _, s := range strings.Split(list, ",") {
			p, _ := strconv.Atoi(s)
			if _, err := claim(dir, p); err == nil {
				os.Stdout.WriteString("GOT " + s + "\n")
			}
		}
		return
	}
	var taken []string
	for range 20 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, strconv.Itoa(p))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPortsHeldAcrossProcesses$")
	cmd.Env = append(os.Environ(), "PORTS_CLAIM="+strings.Join(taken, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "GOT ") {
		t.Fatalf("another process claimed ports this one holds:\n%s", out)
	}
}

// peek returns a port Free would hand out next, without holding it.
func peek(t *testing.T) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	lo, hi := window()
	if next < lo || next >= hi {
		next = lo
	}
	return next
}
