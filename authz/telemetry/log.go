// Package telemetry sets up what phantom-authz reports about itself: the
// structured logger now, OpenTelemetry traces and metrics as they arrive.
package telemetry

import (
	"io"
	"log/slog"
	"strings"
)

// NewLogger returns a slog logger writing to w at level ("debug", "info",
// "warn", "error") in format ("json" or "text").
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
