package main

import (
	"github.com/go-logr/logr"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// newLogger builds the guard's logger from the zap flags. Two defaults differ
// from controller-runtime's, because every decision line is an audit record:
//
//   - no sampling: controller-runtime's production logger keeps only every
//     100th line of a message after the first 100 in a second, which would
//     drop decisions during a storm of route writes;
//   - timestamps to the nanosecond (RFC 3339), so decisions can be ordered
//     and matched with the API server's audit log; --zap-time-encoding
//     still chooses another.
func newLogger(o zap.Options) logr.Logger {
	if o.TimeEncoder == nil {
		o.TimeEncoder = zapcore.RFC3339NanoTimeEncoder
	}
	if !o.Development {
		var level zapcore.LevelEnabler = zapcore.InfoLevel
		if o.Level != nil {
			level = o.Level
		}
		// controller-runtime samples unless the level admits V(2), so admit
		// it at the core and filter at the asked-for level just above it.
		if !level.Enabled(zapcore.Level(-2)) {
			o.Level = zapcore.Level(-2)
			o.ZapOpts = append(o.ZapOpts, uberzap.WrapCore(func(c zapcore.Core) zapcore.Core {
				return levelFilter{Core: c, level: level}
			}))
		}
	}
	return zap.New(zap.UseFlagOptions(&o))
}

// levelFilter passes on the entries level enables, and nothing else.
type levelFilter struct {
	zapcore.Core
	level zapcore.LevelEnabler
}

func (f levelFilter) Enabled(l zapcore.Level) bool { return f.level.Enabled(l) }

func (f levelFilter) With(fields []zapcore.Field) zapcore.Core {
	return levelFilter{Core: f.Core.With(fields), level: f.level}
}

func (f levelFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !f.level.Enabled(e.Level) {
		return ce
	}
	return f.Core.Check(e, ce)
}
