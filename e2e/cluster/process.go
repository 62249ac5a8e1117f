package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one control-plane process that the harness started itself, in its
// own process group, with stdout and stderr in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been reaped
	err     error         // exit status; read only after done is closed
}

func startProc(name, path string, args, env []string, logDir string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies without running Stop (a test timeout panics
		// and skips cleanups), the kernel kills the child too.
		Pdeathsig: syscall.SIGKILL,
	}
	_, _ = fmt.Fprintf(logFile, "+ %s %s\n", path, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits until the process has been reaped.
func (p *proc) stop(grace time.Duration) error {
	if done, _ := p.exited(); done {
		return nil
	}
	pgid := p.pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		// Members of the group that outlived the leader go too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pgid)
	}
}

// pidAlive reports whether pid names a live (not zombie) process.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// /proc/PID/stat: "pid (comm) S ..."; comm may contain spaces or ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

func procExe(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

func procCmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func procPPid(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// findChild finds a child of this process running exe whose command line
// contains marker (envtest starts etcd and kube-apiserver without telling
// their PIDs).
func findChild(exe, marker string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || procPPid(pid) != self || procExe(pid) != exe {
			continue
		}
		for _, arg := range procCmdline(pid) {
			if strings.Contains(arg, marker) {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no child process %s with %q in its command line", exe, marker)
}

// The PID registry lets a later Start kill what an earlier test binary left
// behind when it died without running Stop (e.g. a `go test -timeout` panic).
// Our own children die with their parent (Pdeathsig); etcd and kube-apiserver
// are started by envtest, which cannot ask for that.
var registryMu sync.Mutex

func registryDir() string { return filepath.Join(os.TempDir(), "cutover-guard-e2e-pids") }

type registration struct {
	path string
}

func newRegistration() (*registration, error) {
	if err := os.MkdirAll(registryDir(), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(registryDir(), fmt.Sprintf("%d-*.pids", os.Getpid()))
	if err != nil {
		return nil, err
	}
	_ = f.Close()
	return &registration{path: f.Name()}, nil
}

// record rewrites the registration with the given PIDs and their executables.
func (r *registration) record(pids map[int]string) {
	if r == nil {
		return
	}
	var b strings.Builder
	for pid, exe := range pids {
		fmt.Fprintf(&b, "%d %s\n", pid, exe)
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	_ = os.WriteFile(r.path, []byte(b.String()), 0o644)
}

func (r *registration) remove() {
	if r == nil {
		return
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	_ = os.Remove(r.path)
}

// reapOrphans kills the processes recorded by test binaries that are gone,
// if each PID still runs the executable recorded for it.
func reapOrphans(logf func(string, ...any)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	files, _ := filepath.Glob(filepath.Join(registryDir(), "*.pids"))
	for _, file := range files {
		owner, err := strconv.Atoi(strings.SplitN(filepath.Base(file), "-", 2)[0])
		if err != nil || pidAlive(owner) {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			pidStr, exe, ok := strings.Cut(line, " ")
			pid, err := strconv.Atoi(pidStr)
			if !ok || err != nil || exe == "" || procExe(pid) != exe {
				continue
			}
			logf("cluster: killing orphan %s (pid %d) left by test process %d", filepath.Base(exe), pid, owner)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(file)
	}
}

// killGroup sends SIGKILL to the process group led by pid and to pid itself.
func killGroup(pid int) error {
	errGroup := syscall.Kill(-pid, syscall.SIGKILL)
	errPid := syscall.Kill(pid, syscall.SIGKILL)
	if errGroup != nil && errPid != nil {
		return errPid
	}
	return nil
}

// startWatchdog starts a shell that kills the process groups of pids when
// this process dies (the kernel sends it SIGTERM then). It covers etcd and
// kube-apiserver, which envtest starts without a parent-death signal. Stop
// it with SIGKILL, which skips the trap.
func startWatchdog(pids []int) (*exec.Cmd, error) {
	args := []string{"-c", `trap 'kill -s KILL -- "$@" 2>/dev/null; kill $! 2>/dev/null; exit 0' TERM; sleep 2147483647 & wait`, "cluster-watchdog"}
	for _, pid := range pids {
		args = append(args, "-"+strconv.Itoa(pid))
	}
	cmd := exec.Command("/bin/sh", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return cmd, nil
}

// stopWatchdog kills the watchdog's process group and reaps it.
func stopWatchdog(cmd *exec.Cmd) {
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}
