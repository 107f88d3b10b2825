package webrtc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// pionLoggerFactory routes pion's scoped loggers into slog. pion is chatty (every STUN check
// at trace, every state change at info), so trace goes below slog's Debug level and debug and
// info go to Debug; warnings and errors keep their level.
type pionLoggerFactory struct{ log *slog.Logger }

func newPionLoggerFactory(l *slog.Logger) *pionLoggerFactory { return &pionLoggerFactory{log: l} }

// NewLogger implements logging.LoggerFactory.
func (f *pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With("pion", scope)}
}

// NewPionLoggerFactory exposes the adapter to the simulator, which runs its own pion API.
func NewPionLoggerFactory(l *slog.Logger) logging.LoggerFactory {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return newPionLoggerFactory(l)
}

type pionLogger struct{ log *slog.Logger }

func (p *pionLogger) logf(level slog.Level, format string, args ...any) {
	if !p.log.Enabled(context.Background(), level) {
		return
	}
	p.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (p *pionLogger) Trace(msg string)                  { p.logf(slog.LevelDebug-4, "%s", msg) }
func (p *pionLogger) Tracef(format string, args ...any) { p.logf(slog.LevelDebug-4, format, args...) }
func (p *pionLogger) Debug(msg string)                  { p.logf(slog.LevelDebug, "%s", msg) }
func (p *pionLogger) Debugf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Info(msg string)                   { p.logf(slog.LevelDebug, "%s", msg) }
func (p *pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Warn(msg string)                   { p.logf(warnLevel(msg), "%s", msg) }
func (p *pionLogger) Warnf(format string, args ...any)  { p.logf(warnLevel(format), format, args...) }

// benignWarnings are pion warnings that every normal call produces: ICE
// pinging before the remote candidates are known, and streams or sockets
// already closed at hang-up. At warn level they would bury real problems
// (four lines per call), so they go to Debug; other warnings keep their level.
var benignWarnings = []string{
	"Failed to ping without candidate pairs",
	"Failed to accept RTP stream is already closed",
	"Failed to accept RTCP stream is already closed",
	"Failed to read from candidate",
	"Could not determine PayloadType for SSRC",
}

func warnLevel(msg string) slog.Level {
	for _, b := range benignWarnings {
		if strings.HasPrefix(msg, b) {
			return slog.LevelDebug
		}
	}
	return slog.LevelWarn
}
func (p *pionLogger) Error(msg string)                  { p.logf(slog.LevelError, "%s", msg) }
func (p *pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelError, format, args...) }
