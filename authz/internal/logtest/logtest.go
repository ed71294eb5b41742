// Package logtest collects, in tests, the log lines a component writes from
// any goroutine, so a test can assert what an operator would read.
package logtest

import (
	"strings"
	"sync"
)

// Buffer is an io.Writer safe for concurrent writers; its zero value is
// ready to use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is how many times s occurs in what was written.
func (l *Buffer) Count(s string) int { return strings.Count(l.String(), s) }
