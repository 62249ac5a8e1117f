package checks

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/types"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// Reasons of the database check. Discovery finds the first three; the rest
// are the probe's outcomes, with the probe's values. All deny except
// ReasonDatabaseURLNotFound, ReasonDatabaseNoUser and
// ReasonDatabaseChainNotVerified, which warn.
const (
	ReasonDatabaseURLNotFound       Reason = "DatabaseURLNotFound"
	ReasonDatabaseSecretNotFound    Reason = "DatabaseSecretNotFound"
	ReasonDatabaseConfigMapNotFound Reason = "DatabaseConfigMapNotFound"
	// ReasonDatabaseChainNotVerified warns that a probe passed with TLS
	// but could not verify the server's certificate chain: the connection
	// string names a CA file, which lives in the application's pod.
	ReasonDatabaseChainNotVerified Reason = "DatabaseChainNotVerified"
	// ReasonDatabaseTooManyURLs marks a target, or an update, that names
	// more connection strings (or env var names) than the guard checks.
	ReasonDatabaseTooManyURLs Reason = "DatabaseTooManyURLs"

	ReasonDatabaseNoUser             = Reason(probe.ReasonNoUser)
	ReasonDatabaseURLInvalid         = Reason(probe.ReasonURLInvalid)
	ReasonDatabaseSchemeUnsupported  = Reason(probe.ReasonSchemeUnsupported)
	ReasonDatabasePasswordNotEncoded = Reason(probe.ReasonPasswordNotEncoded)
	ReasonDatabaseHostPublic         = Reason(probe.ReasonHostPublic)
	ReasonDatabaseHostUnresolvable   = Reason(probe.ReasonHostUnresolvable)
	ReasonDatabasePortNotAllowed     = Reason(probe.ReasonPortNotAllowed)
	ReasonDatabaseConnectTimeout     = Reason(probe.ReasonConnectTimeout)
	ReasonDatabaseConnectRefused     = Reason(probe.ReasonConnectRefused)
	ReasonDatabaseUnreachable        = Reason(probe.ReasonUnreachable)
	ReasonDatabaseNoResponse         = Reason(probe.ReasonNoResponse)
	ReasonDatabaseConnectionReset    = Reason(probe.ReasonConnectionReset)
	ReasonDatabaseConnectionClosed   = Reason(probe.ReasonConnectionClosed)
	ReasonDatabaseTLSUnavailable     = Reason(probe.ReasonTLSUnavailable)
	ReasonDatabaseTLSRequired        = Reason(probe.ReasonTLSRequired)
	ReasonDatabaseTLSFailed          = Reason(probe.ReasonTLSFailed)
	ReasonDatabaseAuthFailed         = Reason(probe.ReasonAuthFailed)
	ReasonDatabaseNotFound           = Reason(probe.ReasonNotFound)
	ReasonDatabaseQueryFailed        = Reason(probe.ReasonQueryFailed)
	ReasonDatabaseProbeFailed        = Reason(probe.ReasonProbeFailed)
)

const (
	// DefaultDatabaseURLEnv is the environment variable looked for when no
	// names are configured (--database-url-env).
	DefaultDatabaseURLEnv = "DATABASE_URL"
	// AnnotationDatabaseURLEnv on a Deployment names, comma-separated, the
	// environment variables holding its connection strings. It replaces the
	// configured names for that Deployment; an empty value turns the database
	// check off for it.
	AnnotationDatabaseURLEnv = "cutover-guard.dev/database-url-env"
)

// maxConcurrentProbes bounds the probes one target runs at once.
const maxConcurrentProbes = 4

// DefaultMaxDatabaseURLsPerTarget is the default of Input.MaxDatabaseURLs
// (--max-database-urls-per-target): the distinct connection strings the
// database check probes for one target.
const DefaultMaxDatabaseURLsPerTarget = 8

// urlBudget is the distinct connection strings one update may still have
// probed, shared by its targets (Guard.MaxDatabaseURLsPerRequest).
type urlBudget struct {
	mu    sync.Mutex
	limit int
	left  int
	taken map[[sha256.Size]byte]bool
}

func newURLBudget(n int) *urlBudget {
	return &urlBudget{limit: n, left: n, taken: map[[sha256.Size]byte]bool{}}
}

// take reports whether dsn may be probed: it was taken before (another
// target names it too), or the budget has room left.
func (b *urlBudget) take(dsn string) bool {
	if b == nil {
		return true
	}
	k := sha256.Sum256([]byte(dsn))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.taken[k] {
		return true
	}
	if b.left == 0 {
		return false
	}
	b.left--
	b.taken[k] = true
	return true
}

// DatabaseReachable finds the connection strings the pods of in.Deployments
// use and probes each distinct one once with in.Prober.
//
// A connection string is the value of an environment variable named in
// in.DatabaseEnv (default DATABASE_URL), or in a Deployment's
// AnnotationDatabaseURLEnv, given as a literal value (with $(VAR) references
// expanded as the kubelet does), a secretKeyRef, a configMapKeyRef or envFrom.
// The app containers and the sidecar containers (init containers with
// restartPolicy Always) are searched; plain init containers are not: they
// ran to completion before the pods became ready, which the deployment check
// already requires. Secrets and ConfigMaps are read with single GETs.
//
// It returns one Finding per problem: a missing Secret or key, a connection
// string that fails a stage of the probe. A target whose Deployments hold no
// connection string gets one Warn finding. A nil Prober, or no Deployments,
// finds nothing. A Secret or ConfigMap that cannot be read (other than
// NotFound), or ctx ending before a probe does, is an error.
//
// It also runs the schema gate: a string used by a workload with
// AnnotationSchemaTool is probed with that tool's schema query instead of
// SELECT 1 (Prober.ProbeSchema), and the state read is judged against the
// workload's AnnotationSchemaMin and AnnotationSchemaMax (schemaVerdict);
// those findings have Check CheckSchema.
func DatabaseReachable(ctx context.Context, in *Input) ([]Finding, error) {
	workloads := in.workloads()
	if in.Prober == nil || len(workloads) == 0 {
		return nil, nil
	}
	svc := in.Target.Service
	uses, findings, err := discoverDSNs(ctx, in.Reader, svc, workloads, in.DatabaseEnv)
	if err != nil {
		return nil, err
	}
	specs, bad := schemaSpecs(svc, workloads)
	findings = append(findings, bad...)
	findings = append(findings, schemaWithoutDatabase(svc, workloads, specs, uses, in.DatabaseEnv)...)
	// Past the caps the target is denied; the strings within them are
	// still probed (at most the cap), so their findings come along.
	limit := in.MaxDatabaseURLs
	if limit <= 0 {
		limit = DefaultMaxDatabaseURLsPerTarget
	}
	if len(uses) > limit {
		findings = append(findings, tooManyURLs(svc, uses, limit))
		uses = uses[:limit]
	}
	for i, u := range uses {
		if !in.requestURLs.take(u.value) {
			findings = append(findings, Finding{
				Check: CheckDatabase, Severity: Deny, Service: svc, Object: u.src.object(), Reason: ReasonDatabaseTooManyURLs,
				Message: fmt.Sprintf("the targets of this update name more than %d connection strings; the guard checks at most %d per update, so %s not checked",
					in.requestURLs.limit, in.requestURLs.limit, uncheckedStrings(len(uses)-i, svc)),
				Fix: "switch fewer backends in one update, or point them at fewer distinct connection strings",
			})
			uses = uses[:i]
			break
		}
	}
	// The Deployments are the Service's namespace's: it pays for the
	// strings written in its pod templates, and its probes are its share
	// of the Prober's slots.
	ns := svc.Namespace
	kept := uses[:0:0]
	var retry time.Duration
	for _, u := range uses {
		if ok, r := in.namespaceURLs.take(ns, u.value); !ok {
			retry = r
			continue
		}
		kept = append(kept, u)
	}
	if left := len(uses) - len(kept); left > 0 {
		findings = append(findings, budgetExceeded(svc, ns, in.namespaceURLs.limit, left, retry))
	}
	uses = kept
	pctx := probe.WithTenant(ctx, ns)
	// A string used by workloads that declare a schema tool is probed with
	// their schema query instead of SELECT 1 (once per distinct query):
	// the first probe's result is the database check's.
	jobs := probeJobs(uses, specs)
	for _, j := range jobs {
		if j.query != nil {
			logf.FromContext(ctx).V(1).Info("schema query", "check", string(CheckSchema), "service", svc.String(),
				"source", uses[j.use].src.String(), "tool", string(j.query.Tool))
		}
	}
	var g errgroup.Group
	g.SetLimit(maxConcurrentProbes)
	for i := range jobs {
		j := &jobs[i]
		g.Go(func() (err error) {
			if j.query == nil {
				j.res, err = in.Prober.Probe(pctx, uses[j.use].value)
			} else {
				j.res, err = in.Prober.ProbeSchema(pctx, uses[j.use].value, *j.query)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("probing the database of service %s: %w", svc, err)
	}
	results := make([]probe.Result, len(uses))
	for _, j := range slices.Backward(jobs) {
		results[j.use] = j.res // the use's first job last: its result stands
	}
	for _, j := range jobs {
		if !j.res.Passed() || j.res.Schema == nil {
			continue // the database check's finding says why
		}
		for _, wi := range j.workloads {
			findings = append(findings, schemaVerdict(svc, specs[wi], uses[j.use].src, j.res.Schema)...)
		}
	}
	for i, r := range results {
		if r.Detail != "" {
			// The requester reads "not reachable"; the platform team
			// needs to know whether it was refused, timed out or reset.
			logf.FromContext(ctx).Info("database not reachable", "check", string(CheckDatabase), "service", svc.String(),
				"source", uses[i].src.String(), "reason", string(r.Reason), "detail", r.Detail)
		}
		if f, ok := databaseFinding(svc, uses[i].src, r); ok {
			findings = append(findings, f)
		}
	}
	return findings, nil
}

// tooManyURLs is the Deny finding of a target whose Deployments name more
// than limit distinct connection strings.
func tooManyURLs(svc types.NamespacedName, uses []dsnUse, limit int) Finding {
	var deps, refs []string
	for _, u := range uses {
		if !slices.Contains(deps, u.src.deployment) {
			deps = append(deps, u.src.deployment)
			refs = append(refs, u.src.workloadKindName()+" "+u.src.deployment)
		}
	}
	who := refs[0] + " names"
	if len(deps) > 1 {
		who = "deployments " + nameList(deps) + " name"
		if slices.ContainsFunc(uses, func(u dsnUse) bool { return u.src.workloadKindName() != "deployment" }) {
			who = "workloads " + nameList(refs) + " name"
		}
	}
	return Finding{
		Check: CheckDatabase, Severity: Deny, Service: svc, Object: refs[0], Reason: ReasonDatabaseTooManyURLs,
		Message: fmt.Sprintf("%s %d connection strings; the guard checks at most %d", who, len(uses), limit),
		Fix: fmt.Sprintf("point the env vars of annotation %s (or --database-url-env) at no more than %d distinct connection strings",
			AnnotationDatabaseURLEnv, limit),
	}
}

// databaseFinding turns the probe of a string found at src into a finding;
// false for a probe that passed with nothing to say.
func databaseFinding(svc types.NamespacedName, src dsnSource, r probe.Result) (Finding, bool) {
	f := Finding{Check: CheckDatabase, Severity: Deny, Service: svc, Object: src.object(), Reason: Reason(r.Reason)}
	switch {
	case r.Passed() && r.ChainNotVerified:
		f.Severity, f.Reason = Warn, ReasonDatabaseChainNotVerified
		f.Message = "database TLS checked, not its certificate chain (the CA file is in the pod)"
		return f, true
	case r.Passed():
		return Finding{}, false
	case r.Reason == probe.ReasonNoUser:
		f.Severity = Warn
	}
	f.Message, f.Fix = r.Message.Render(src.String()), r.Fix.Render(src.String())
	// Whatever the probe says may come from the connection string (its
	// host, port, user, database name): every word of it is the content
	// of the objects the string was read from.
	if objs := src.revealed(); len(objs) > 0 {
		f.Reveals, f.Source = objs, src.String()
	}
	return f, true
}

// uncheckedStrings counts the connection strings of svc left out by a cap:
// "1 connection string of service ns/app was", "5 connection strings of
// service ns/app were".
func uncheckedStrings(n int, svc types.NamespacedName) string {
	if n == 1 {
		return fmt.Sprintf("1 connection string of service %s was", svc)
	}
	return fmt.Sprintf("%d connection strings of service %s were", n, svc)
}

// probeJob is one probe of a connection string: SELECT 1 (query nil), or
// the schema query of the workloads that declare it.
type probeJob struct {
	use       int // index in uses
	query     *probe.SchemaQuery
	workloads []int // the workloads (indexes) whose spec asks for query
	res       probe.Result
}

// probeJobs is the probes of uses, in order: for each string, one per
// distinct schema query its workloads' specs ask for, or SELECT 1 when none
// declares a tool.
func probeJobs(uses []dsnUse, specs []*schemaSpec) []probeJob {
	var jobs []probeJob
	for ui, u := range uses {
		first := len(jobs)
		for _, wi := range u.workloads {
			s := specs[wi]
			if s == nil {
				continue
			}
			q := s.query()
			at := slices.IndexFunc(jobs[first:], func(j probeJob) bool { return *j.query == q })
			if at < 0 {
				jobs = append(jobs, probeJob{use: ui, query: &q})
				at = len(jobs) - 1 - first
			}
			jobs[first+at].workloads = append(jobs[first+at].workloads, wi)
		}
		if len(jobs) == first {
			jobs = append(jobs, probeJob{use: ui})
		}
	}
	return jobs
}

// schemaWithoutDatabase denies each workload that declares a schema tool
// but uses no connection string the guard found: the gate has nothing to
// read.
func schemaWithoutDatabase(svc types.NamespacedName, workloads []Workload, specs []*schemaSpec, uses []dsnUse, envNames []string) []Finding {
	var out []Finding
	for wi, s := range specs {
		if s == nil || slices.ContainsFunc(uses, func(u dsnUse) bool { return slices.Contains(u.workloads, wi) }) {
			continue
		}
		names := databaseEnvNames(envNames)
		if a, ok := workloads[wi].Object.GetAnnotations()[AnnotationDatabaseURLEnv]; ok {
			names, _ = splitNames(a, maxAnnotationEnvNames)
		}
		looked := "no env vars (annotation " + AnnotationDatabaseURLEnv + " is empty)"
		if len(names) > 0 {
			looked = nameList(names)
		}
		out = append(out, Finding{Check: CheckSchema, Severity: Deny, Service: svc, Object: s.workload, Reason: ReasonSchemaNoDatabase,
			Message: fmt.Sprintf("%s declares %s %s but the guard found no connection string in its containers to read the %s table over (looked for %s)",
				s.workload, AnnotationSchemaTool, s.tool, s.tool.Table(), looked),
			Fix: fmt.Sprintf("name the env var holding the connection string in annotation %s, or remove %s", AnnotationDatabaseURLEnv, AnnotationSchemaTool)})
	}
	return out
}
