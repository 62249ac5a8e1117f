package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Every decision line is an audit record: none may be sampled away, the
// level flags still decide what is logged, and timestamps are precise enough
// to order decisions.
func TestLoggerKeepsEveryLine(t *testing.T) {
	tests := map[string]struct {
		args      []string
		wantInfo  int
		wantDebug int
	}{
		"production defaults keep all 300 identical info lines and no debug": {wantInfo: 300, wantDebug: 0},
		"--zap-log-level=debug keeps both":                                   {args: []string{"--zap-log-level=debug"}, wantInfo: 300, wantDebug: 300},
		"--zap-log-level=error keeps neither":                                {args: []string{"--zap-log-level=error"}},
		"--zap-log-level=2 keeps both, as controller-runtime does":           {args: []string{"--zap-log-level=2"}, wantInfo: 300, wantDebug: 300},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := parseFlags("cutover-guard", append([]string{"--cert-rotation=false"}, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			cfg.Zap.DestWriter = &buf
			log := newLogger(cfg.Zap)
			for range 300 {
				log.Info("cutover allowed", "targets", []string{"service production/app-green:80"})
				log.V(1).Info("no backend's share of traffic grows; allowed")
			}
			info := strings.Count(buf.String(), `"msg":"cutover allowed"`)
			debug := strings.Count(buf.String(), `"msg":"no backend's share of traffic grows; allowed"`)
			if info != tc.wantInfo || debug != tc.wantDebug {
				t.Errorf("logged %d info and %d debug lines, want %d and %d", info, debug, tc.wantInfo, tc.wantDebug)
			}
		})
	}
}

func TestLoggerTimestampsAreRFC3339Nano(t *testing.T) {
	cfg, err := parseFlags("cutover-guard", []string{"--cert-rotation=false"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	cfg.Zap.DestWriter = &buf
	newLogger(cfg.Zap).Info("cutover denied")
	var line struct {
		TS string `json:"ts"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if _, err := time.Parse(time.RFC3339Nano, line.TS); err != nil || !strings.Contains(line.TS, ".") {
		t.Errorf("timestamp %q is not RFC 3339 with fractional seconds (err %v)", line.TS, err)
	}
}
