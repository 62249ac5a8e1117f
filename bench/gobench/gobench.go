// Package gobench reads the output of `go test -bench`: one Result per
// benchmark line, with the package it ran in and every metric on the line.
package gobench

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Result is one benchmark line, e.g.
// "BenchmarkFastPath-2  30862  37194 ns/op  16560 B/op  117 allocs/op".
type Result struct {
	Pkg  string
	Name string // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	// Procs is the GOMAXPROCS suffix (1 when there is none).
	Procs      int
	Iterations int
	// Metrics by unit: "ns/op", "B/op", "allocs/op" and custom ones.
	Metrics map[string]float64
}

// Parse reads every benchmark line of r; other lines are skipped.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	pkg := ""
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if res, ok := parseLine(line); ok {
			res.Pkg = pkg
			out = append(out, res)
		}
	}
	return out, s.Err()
}

func parseLine(line string) (Result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
		return Result{}, false
	}
	name, procs := strings.TrimPrefix(f[0], "Benchmark"), 1
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil {
			name, procs = name[:i], n
		}
	}
	iters, err := strconv.Atoi(f[1])
	if err != nil {
		return Result{}, false
	}
	res := Result{Name: name, Procs: procs, Iterations: iters, Metrics: map[string]float64{}}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Result{}, false
		}
		res.Metrics[f[i+1]] = v
	}
	return res, true
}

// Median returns the median of values (the mean of the middle two for an
// even count); 0 for none.
func Median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Medians groups results by name and returns, per name, the median of each
// metric over the runs, and how many runs there were.
func Medians(results []Result) map[string]Summary {
	values := map[string]map[string][]float64{}
	for _, r := range results {
		if values[r.Name] == nil {
			values[r.Name] = map[string][]float64{}
		}
		for unit, v := range r.Metrics {
			values[r.Name][unit] = append(values[r.Name][unit], v)
		}
	}
	out := map[string]Summary{}
	for name, units := range values {
		s := Summary{Metrics: map[string]float64{}}
		for unit, vs := range units {
			s.Metrics[unit] = Median(vs)
			s.Runs = max(s.Runs, len(vs))
		}
		out[name] = s
	}
	return out
}

// Summary is the median of each metric of one benchmark over its runs.
type Summary struct {
	Runs    int
	Metrics map[string]float64
}
