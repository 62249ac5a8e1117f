package gobench

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const output = `goos: linux
goarch: amd64
pkg: github.com/cutover-guard/cutover-guard/webhook
cpu: AMD EPYC
BenchmarkFastPath-2   	   30862	     37194 ns/op	   16560 B/op	     117 allocs/op
BenchmarkFastPath-2   	   31860	     41562 ns/op	   16560 B/op	     117 allocs/op
BenchmarkFastPath-2   	   24349	     46004 ns/op	   16560 B/op	     117 allocs/op
--- SKIP: BenchmarkSwitchPathWarmDB
PASS
ok  	github.com/cutover-guard/cutover-guard/webhook	5.002s
pkg: github.com/cutover-guard/cutover-guard/checks
BenchmarkProbeShared50Postgres-2   	     182	   6541892 ns/op	         1.000 conns/op	        50.00 switches/op	  486644 B/op	    4457 allocs/op
BenchmarkNoProcs 	 10	 5 ns/op
`

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader(output))
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{
		{Pkg: "github.com/cutover-guard/cutover-guard/webhook", Name: "FastPath", Procs: 2, Iterations: 30862,
			Metrics: map[string]float64{"ns/op": 37194, "B/op": 16560, "allocs/op": 117}},
		{Pkg: "github.com/cutover-guard/cutover-guard/webhook", Name: "FastPath", Procs: 2, Iterations: 31860,
			Metrics: map[string]float64{"ns/op": 41562, "B/op": 16560, "allocs/op": 117}},
		{Pkg: "github.com/cutover-guard/cutover-guard/webhook", Name: "FastPath", Procs: 2, Iterations: 24349,
			Metrics: map[string]float64{"ns/op": 46004, "B/op": 16560, "allocs/op": 117}},
		{Pkg: "github.com/cutover-guard/cutover-guard/checks", Name: "ProbeShared50Postgres", Procs: 2, Iterations: 182,
			Metrics: map[string]float64{"ns/op": 6541892, "conns/op": 1, "switches/op": 50, "B/op": 486644, "allocs/op": 4457}},
		{Pkg: "github.com/cutover-guard/cutover-guard/checks", Name: "NoProcs", Procs: 1, Iterations: 10,
			Metrics: map[string]float64{"ns/op": 5}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	m := Medians(got)
	if s := m["FastPath"]; s.Runs != 3 || s.Metrics["ns/op"] != 41562 {
		t.Errorf("FastPath summary = %+v, want 3 runs with median 41562 ns/op", s)
	}
}

func TestMedian(t *testing.T) {
	tests := map[string]struct {
		in   []float64
		want float64
	}{
		"none":           {nil, 0},
		"odd count":      {[]float64{9, 1, 5}, 5},
		"even count":     {[]float64{4, 1, 3, 2}, 2.5},
		"single value":   {[]float64{7}, 7},
		"input order ok": {[]float64{3, 3, 1}, 3},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Median(tc.in); got != tc.want {
				t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
