// Command demo narrates the blue-green tutorial's cutover and rollback
// (seed/blue-green-doks-gateway-api) with cutover-guard in front of the API
// server, on a local control plane: `make demo`.
//
// It starts the control plane (package e2e/cluster), picks a database (the
// local PostgreSQL at 127.0.0.1:5432 if it answers, else a throwaway one),
// builds and starts the guard and registers its webhook, applies the
// tutorial's manifests, then runs the tutorial's kubectl commands one by one,
// printing each exactly and the guard's answer, and ends with a summary
// table. It exits 1 if any step does not behave as narrated.
//
// Everything it started is stopped when it ends (also on Ctrl-C). With
// DEMO_KEEP=1 the control plane and the guard keep running in a background
// process; the demo prints the KUBECONFIG to use and how to stop them (a
// later run stops them too). CUTOVER_GUARD_DEMO_DB=throwaway skips the local
// PostgreSQL.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

const (
	keepEnv = "DEMO_KEEP"
	// keeperFlag marks the background process that holds a kept demo.
	keeperFlag = "-keeper"
	// resultFD is where a keeper reports its exit code to its parent.
	resultFD = 3
)

func main() {
	keeper := flag.Bool(strings.TrimPrefix(keeperFlag, "-"), false, "internal: run as the background process of DEMO_KEEP=1")
	flag.Parse()
	os.Exit(run(*keeper))
}

func run(keeper bool) int {
	root, err := tutorial.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	state := filepath.Join(root, ".cache", "demo")
	keep := os.Getenv(keepEnv) == "1"

	if !keeper {
		if err := stopKept(state); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		if keep {
			return runKeeper()
		}
	} else {
		syscall.CloseOnExec(resultFD) // no child may hold the parent's pipe
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{root: root, out: os.Stdout}
	defer d.cleanup()
	code := d.run(ctx)
	if !keeper {
		return code
	}

	result := os.NewFile(resultFD, "result")
	if code != 0 || ctx.Err() != nil {
		_, _ = fmt.Fprintf(result, "exit=%d\n", max(code, 1))
		return max(code, 1)
	}
	if err := os.MkdirAll(state, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(state, "keeper.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
		defer func() { _ = os.Remove(filepath.Join(state, "keeper.pid")) }()
	}
	d.printKept(os.Getpid())
	// The terminal belongs to the parent, which now exits: write nothing
	// more there.
	if f, err := os.OpenFile(filepath.Join(state, "keeper.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err == nil {
		_ = syscall.Dup3(int(f.Fd()), 1, 0)
		_ = syscall.Dup3(int(f.Fd()), 2, 0)
		_ = f.Close()
	}
	_, _ = fmt.Fprintf(result, "exit=0\n")
	_ = result.Close()
	<-ctx.Done()
	fmt.Printf("%s: stopping\n", time.Now().Format(time.RFC3339))
	return 0
}

// runKeeper runs the demo in a background process that outlives this one
// and keeps the control plane and guard running; it returns the demo's exit
// code once the narration is over.
func runKeeper() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	cmd := exec.Command(exe, keeperFlag)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	_ = w.Close()
	// Ctrl-C before the narration ends stops the keeper, which cleans up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for range sigs {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
	}()
	line, _ := bufio.NewReader(r).ReadString('\n')
	if v, ok := strings.CutPrefix(strings.TrimSpace(line), "exit="); ok {
		if code, err := strconv.Atoi(v); err == nil {
			if code != 0 {
				_ = cmd.Wait()
			}
			return code
		}
	}
	err = cmd.Wait()
	fmt.Fprintf(os.Stderr, "demo: background process ended without a result: %v\n", err)
	return 1
}

// stopKept stops a demo that an earlier DEMO_KEEP=1 run left running.
func stopKept(state string) error {
	pidFile := filepath.Join(state, "keeper.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !isKeeper(pid) {
		return os.Remove(pidFile)
	}
	fmt.Printf("Stopping the demo left running by %s=1 (pid %d)...\n", keepEnv, pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	// It stops the guard and the control plane, then exits.
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		return !isKeeper(pid), nil
	})
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return fmt.Errorf("the kept demo (pid %d) did not stop within 90s; killed it", pid)
	}
	_ = os.Remove(pidFile)
	return nil
}

// isKeeper reports whether pid runs a demo keeper.
func isKeeper(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			return false
		}
	}
	return len(args) == 2 && args[1] == keeperFlag && filepath.Base(args[0]) == filepath.Base(mustExecutable())
}

func mustExecutable() string {
	exe, err := os.Executable()
	if err != nil {
		return "demo"
	}
	return exe
}
