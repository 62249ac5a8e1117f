// Package cutoverctl is the kubectl plugin `kubectl cutover`: status,
// check, switch, rollback and history of a blue-green HTTPRoute guarded by
// cutover-guard.
//
// It decides nothing itself: every switch is first sent to the API server
// as a server-side dry run of the exact patch it would apply, and the
// guard's webhook answers. The plugin shows that answer, the route's state
// and the workloads behind its backends, and records each switch it makes
// in annotations on the route so that rollback knows where to go.
package cutoverctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
)

// Exit codes.
const (
	// ExitOK: done; for check, the guard allows the switch.
	ExitOK = 0
	// ExitDenied: the guard denies the switch, or the verification after it failed.
	ExitDenied = 1
	// ExitError: anything else (bad input, a missing route or backend, no
	// guard to decide, an API error).
	ExitError = 2
)

// Defaults of the plugin's own flags.
const (
	// DefaultWatchInterval is how often status -w redraws.
	DefaultWatchInterval = 2 * time.Second
	// DefaultRequestTimeout bounds each API request unless --request-timeout says otherwise.
	DefaultRequestTimeout = 30 * time.Second
)

// exitError carries an exit code; err, if set, is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// Main runs the plugin with args (without the program name) and returns its
// exit code.
func Main(args []string, streams genericiooptions.IOStreams) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			_, _ = fmt.Fprintf(streams.ErrOut, "error: %v\n", ee.err)
		}
		return ee.code
	}
	_, _ = fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
	return ExitError
}

// root holds what every command shares.
type root struct {
	streams genericiooptions.IOStreams
	flags   *genericclioptions.ConfigFlags
	output  string
}

func (r *root) json() bool { return r.output == "json" }

func (r *root) env() (*env, error) {
	if r.output != "" && r.output != "json" {
		return nil, fmt.Errorf("-o %q: the only output format is json (or leave -o out for text)", r.output)
	}
	r.flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		if c.Timeout == 0 {
			c.Timeout = DefaultRequestTimeout
		}
		// status makes a few dozen requests; kubectl's own limits.
		c.QPS, c.Burst = 50, 300
		return c
	}
	return newEnv(r.flags)
}

// print writes v as JSON with -o json, else calls text.
func (r *root) print(v any, text func(io.Writer)) error {
	if !r.json() {
		text(r.streams.Out)
		return nil
	}
	enc := json.NewEncoder(r.streams.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// NewCommand is `kubectl cutover` with its subcommands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	r := &root{streams: streams, flags: genericclioptions.NewConfigFlags(true)}
	cmd := &cobra.Command{
		Use:   "kubectl-cutover",
		Short: "Blue-green cutovers of an HTTPRoute, decided by cutover-guard",
		Long: `kubectl cutover shows where an HTTPRoute sends its traffic and switches it between
Services (blue and green). Every switch is first a server-side dry run of the exact
patch, so the cutover-guard webhook decides, never the plugin.

Exit codes: 0 done (check: allowed), 1 denied by the guard or verification failed,
2 error (bad input, missing route or Service, no guard installed, API error).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	r.flags.AddFlags(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVarP(&r.output, "output", "o", "", "output format: json (default: text)")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: ExitError, err: fmt.Errorf("%w\nsee: %s --help", err, c.CommandPath())}
	})
	cmd.AddCommand(r.statusCommand(), r.checkCommand(), r.switchCommand(), r.rollbackCommand(), r.historyCommand())
	return cmd
}

func exactlyOneRoute(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return &exitError{code: ExitError, err: fmt.Errorf("%s takes one argument, the HTTPRoute's name (got %d); e.g. %s myapp -n production", cmd.Name(), len(args), cmd.CommandPath())}
	}
	return nil
}

func fail(err error) error { return &exitError{code: ExitError, err: err} }

func (r *root) statusCommand() *cobra.Command {
	var watch bool
	interval := DefaultWatchInterval
	cmd := &cobra.Command{
		Use:   "status ROUTE",
		Short: "Where the route sends traffic, the state of each color, and the guard's verdict on switching to it now",
		Args:  exactlyOneRoute,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := r.env()
			if err != nil {
				return fail(err)
			}
			ctx := cmd.Context()
			if !watch {
				s, err := e.status(ctx, args[0])
				if err != nil {
					return fail(err)
				}
				return r.print(s, func(w io.Writer) { renderStatus(w, s) })
			}
			if interval <= 0 {
				return fail(fmt.Errorf("--interval %s: want a positive duration", interval))
			}
			return r.watchStatus(ctx, e, args[0], interval)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw until interrupted (Ctrl-C)")
	cmd.Flags().DurationVar(&interval, "interval", DefaultWatchInterval, "how often --watch redraws")
	return cmd
}

// watchStatus redraws status every interval until ctx ends (Ctrl-C), which
// is a normal end. On a terminal it redraws in place; elsewhere (and with
// -o json) it writes one frame after another.
func (r *root) watchStatus(ctx context.Context, e *env, route string, interval time.Duration) error {
	clear := !r.json() && isTerminalWriter(r.streams.Out)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s, err := e.status(ctx, route)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fail(err)
		}
		if clear {
			_, _ = io.WriteString(r.streams.Out, "\x1b[H\x1b[2J")
		}
		if err := r.print(s, func(w io.Writer) { renderStatus(w, s) }); err != nil {
			return fail(err)
		}
		if !clear && !r.json() {
			_, _ = fmt.Fprintln(r.streams.Out, "---")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && terminal(f)
}

func (r *root) checkCommand() *cobra.Command {
	var to string
	rule := -1
	cmd := &cobra.Command{
		Use:   "check ROUTE --to SERVICE",
		Short: "Ask the guard, by a server-side dry run of the exact patch switch would send, whether the switch is allowed",
		Long: `check sends the patch that switch would send as a server-side dry run: the
cutover-guard webhook reviews it and the plugin prints its verdict and findings.
Nothing is changed and no Event is recorded.

Exit codes: 0 allowed, 1 denied, 2 error (including: no guard reviewed the dry run,
so check cannot decide).`,
		Args: exactlyOneRoute,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return fail(errors.New("--to SERVICE is required: the Service to switch the route to"))
			}
			e, err := r.env()
			if err != nil {
				return fail(err)
			}
			res, code, err := e.check(cmd.Context(), args[0], to, rule)
			if err != nil {
				return fail(err)
			}
			if err := r.print(res, func(w io.Writer) { renderCheck(w, res) }); err != nil {
				return fail(err)
			}
			if code != ExitOK {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the Service to switch the route to (required)")
	cmd.Flags().IntVar(&rule, "rule", -1, "switch only this rule (index); default every rule with backendRefs")
	return cmd
}

func (e *env) check(ctx context.Context, name, to string, rule int) (*CheckResult, int, error) {
	route, err := e.getRoute(ctx, name)
	if err != nil {
		return nil, ExitError, err
	}
	p, err := planSwitch(route, to, rule)
	if err != nil {
		return nil, ExitError, err
	}
	res := &CheckResult{Route: route.Name, Namespace: route.Namespace, From: live(rulesOf(route)), To: live(rulesOf(route))}
	if !p.changed() {
		res.Unchanged = true
		return res, ExitOK, nil
	}
	res.From, res.To = live(p.Before), live(p.After)
	if _, err := e.targetWarnings(ctx, route, p); err != nil {
		return nil, ExitError, err
	}
	if g := findGuard(ctx, e.c); g.State == GuardMissing {
		return nil, ExitError, errNoGuard
	}
	patch, err := buildPatch(route, p, newSwitch(p, ActionSwitch, e.whoAmI(ctx), "", time.Now()))
	if err != nil {
		return nil, ExitError, err
	}
	res.Patch = string(patch)
	_, v, err := e.decide(ctx, route, patch)
	if err != nil {
		return nil, ExitError, err
	}
	res.Verdict = &v
	switch {
	case !v.Reviewed:
		return res, ExitError, nil
	case !v.Allowed:
		return res, ExitDenied, nil
	}
	return res, ExitOK, nil
}

func (r *root) switchCommand() *cobra.Command {
	o := switchOptions{action: ActionSwitch, rule: -1}
	cmd := &cobra.Command{
		Use:   "switch ROUTE --to SERVICE",
		Short: "Switch the route's traffic to SERVICE: dry run, diff, confirmation, patch, wait, and optionally verify",
		Long: `switch dry-runs the patch (the guard decides), shows the diff, asks (unless --yes),
patches the route and records the previous backends and the reason in annotations on
it. A rule with one backendRef gets the tutorial's JSON patch of its name; a rule that
splits traffic gets weight 100 for SERVICE and 0 for the others.

--verify URL then sends --verify-count GET requests, --verify-interval apart, each of
which must answer 200 (the tutorial's post-cutover check); with --rollback-on-failure
a failure switches back at once, through the guard like any switch.`,
		Args: exactlyOneRoute,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.to == "" {
				return fail(errors.New("--to SERVICE is required: the Service to switch the route to"))
			}
			if o.rollback && o.verify.url == "" {
				return fail(errors.New("--rollback-on-failure needs --verify URL: it rolls back when the verification fails"))
			}
			if err := o.verify.validate(); err != nil {
				return fail(err)
			}
			o.route = args[0]
			return r.runSwitch(cmd.Context(), o)
		},
	}
	r.switchFlags(cmd, &o)
	cmd.Flags().StringVar(&o.to, "to", "", "the Service to switch the route to (required)")
	cmd.Flags().IntVar(&o.rule, "rule", -1, "switch only this rule (index); default every rule with backendRefs")
	cmd.Flags().StringVar(&o.verify.url, "verify", "", "after the switch, GET this URL (the Gateway's address) and require HTTP 200")
	cmd.Flags().IntVar(&o.verify.count, "verify-count", DefaultVerifyCount, "requests --verify sends")
	cmd.Flags().DurationVar(&o.verify.interval, "verify-interval", DefaultVerifyInterval, "time between --verify requests")
	cmd.Flags().DurationVar(&o.verify.timeout, "verify-timeout", DefaultVerifyTimeout, "timeout of each --verify request")
	cmd.Flags().BoolVar(&o.rollback, "rollback-on-failure", false, "when --verify fails, switch back at once")
	return cmd
}

func (r *root) rollbackCommand() *cobra.Command {
	o := switchOptions{action: ActionRollback, rule: -1}
	cmd := &cobra.Command{
		Use:   "rollback ROUTE",
		Short: "Switch the route back to the backends recorded by the last switch",
		Long: `rollback switches the route back to the backends the last switch recorded, the
same way as switch (dry run, diff, confirmation unless --yes). When that backend is
scaled down it warns first and says the command that scales it up.`,
		Args: exactlyOneRoute,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.route = args[0]
			return r.runSwitch(cmd.Context(), o)
		},
	}
	r.switchFlags(cmd, &o)
	return cmd
}

func (r *root) switchFlags(cmd *cobra.Command, o *switchOptions) {
	cmd.Flags().StringVar(&o.reason, "reason", "", "why, recorded on the route with the switch")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "switch without asking (required when standard input is not a terminal)")
	cmd.Flags().DurationVar(&o.waitTimeout, "wait-timeout", DefaultWaitTimeout, "how long to wait for the route's conditions after the switch")
}

func (r *root) runSwitch(ctx context.Context, o switchOptions) error {
	// Refuse before anything else: a script that forgot --yes learns it
	// at once, not after a dry run.
	if !o.yes && !terminal(r.streams.In) {
		return fail(errNotTerminal)
	}
	e, err := r.env()
	if err != nil {
		return fail(err)
	}
	prompt := r.streams.Out
	s := &switcher{e: e, o: o}
	if r.json() {
		prompt = r.streams.ErrOut
	} else {
		s.out = r.streams.Out
	}
	s.ask = asker{in: r.streams.In, out: prompt}.ask
	res, code, err := s.run(ctx)
	if r.json() && res != nil {
		if perr := r.print(res, nil); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return &exitError{code: ExitError, err: err}
	}
	if code != ExitOK {
		return &exitError{code: code}
	}
	return nil
}

func (r *root) historyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history ROUTE",
		Short: "The guard's CutoverDenied and CutoverOverridden Events on the route and the switches the plugin recorded, newest first",
		Args:  exactlyOneRoute,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := r.env()
			if err != nil {
				return fail(err)
			}
			h, err := e.history(cmd.Context(), args[0])
			if err != nil {
				return fail(err)
			}
			if h == nil {
				h = []HistoryEntry{}
			}
			return r.print(h, func(w io.Writer) { renderHistory(w, args[0], e.namespace, h) })
		},
	}
}
