package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/webhook"
)

// Config is everything the guard is configured with.
type Config struct {
	Kubeconfig     string
	CertDir        string
	Port           int
	MetricsAddr    string
	PprofAddr      string
	HealthAddr     string
	PrivateCIDRs   []netip.Prefix
	DatabasePorts  []uint16
	DBTimeout      time.Duration
	DBCacheTTL     time.Duration
	RequestTimeout time.Duration
	CheckCreate    bool
	DatabaseURLEnv []string
	// MaxDatabaseURLsPerTarget and MaxDatabaseURLsPerRequest bound the
	// distinct connection strings probed for one target and one update.
	MaxDatabaseURLsPerTarget  int
	MaxDatabaseURLsPerRequest int
	// DBMaxInFlight bounds the database probes running at once.
	DBMaxInFlight int
	// MaxChecksPerNamespace bounds the decisions checked at once for one
	// namespace; DBProbesPerNamespacePerMinute the distinct connection
	// strings probed per minute for one namespace.
	MaxChecksPerNamespace         int
	DBProbesPerNamespacePerMinute int
	EnableHTTP2                   bool
	SkipDatabase                  bool
	// SmokeChecks runs the opt-in smoke gate (cutover-guard.dev/smoke-path).
	SmokeChecks bool
	Zap         zap.Options
	// OverrideGroups are the users and groups who may let a denied switch
	// through with the cutover-guard.dev/override annotation; empty: nobody.
	OverrideGroups []string
	// RedactUnreadable shows a requester who may not get a Secret or
	// ConfigMap a redacted finding in place of what was read from it.
	RedactUnreadable bool
	// UnknownWorkloads is what a target whose pods belong to a controller
	// the guard cannot judge gets: a denial or a warning.
	UnknownWorkloads checks.UnknownWorkloads
	// FindFrom says where the checks find the ReplicaSets, pods and
	// EndpointSlices a Service selects: the guard's own metadata
	// informers, or a LIST from the API server's watch cache per decision.
	FindFrom string

	// CertRotation says whether the guard bootstraps and rotates its
	// certificate through a Secret or serves CertDir as someone else (a
	// person out of cluster, cert-manager) writes it; run resolves auto.
	CertRotation certs.Mode
	// ClientCAFile, when set, makes the webhook server require a client
	// certificate signed by one of its CAs (read at start); ClientCN then
	// accepts only that Common Name. ClientAuth is what they load to.
	ClientCAFile string
	ClientCN     string
	ClientAuth   *clientAuth
	// Certs says where the rotated certificate lives; unused without
	// rotation.
	Certs certs.Options
}

// Defaults of flags that no package owns; every other flag defaults to the
// Default* value of the package that owns the setting.
const (
	// defaultCertDir is where controller-runtime's webhook server looks
	// for tls.crt and tls.key on Linux when given no directory.
	defaultCertDir = "/tmp/k8s-webhook-server/serving-certs"
	// defaultHealthAddr serves /healthz and /readyz.
	defaultHealthAddr = ":8081"
	// defaultRequestTimeout is the decision deadline when the API server
	// sends no timeout: below the API server's default of 10 s, so the
	// guard answers before the API server gives up.
	defaultRequestTimeout = 8 * time.Second
)

// --find-from values.
const (
	findFromInformers = "informers"
	findFromAPIServer = "apiserver"
)

func parseFlags(name string, args []string) (Config, error) {
	cfg := Config{Zap: zap.Options{Development: false}, CertRotation: certs.DefaultMode}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty uses $KUBECONFIG or the in-cluster config")
	fs.StringVar(&cfg.CertDir, "cert-dir", defaultCertDir, "directory holding tls.crt and tls.key for the webhook server (reloaded when they change)")
	fs.IntVar(&cfg.Port, "port", crwebhook.DefaultPort, "webhook server port")
	fs.StringVar(&cfg.MetricsAddr, "metrics-bind-address", metricsserver.DefaultBindAddress, "address of the /metrics endpoint; 0 disables it")
	fs.StringVar(&cfg.PprofAddr, "pprof-bind-address", "0", "address of Go's /debug/pprof endpoints (CPU and heap profiles); 0, the default, disables them. They are unauthenticated: bind to localhost or a port no one else reaches")
	fs.StringVar(&cfg.HealthAddr, "health-probe-bind-address", defaultHealthAddr, "address of the /healthz and /readyz endpoints")
	cidrs := fs.String("private-cidrs", joinPrefixes(probe.DefaultPrivateCIDRs()), "comma-separated CIDRs a database host must resolve into to count as private")
	fs.DurationVar(&cfg.DBTimeout, "db-timeout", probe.DefaultTimeout, "bound on each database probe (connect, TLS, auth, SELECT 1)")
	ports := fs.String("database-ports", probe.FormatPorts(probe.DefaultDatabasePorts), "comma-separated ports and ranges (20000-20100) a database probe may connect to; a connection string naming another port is denied without a connection")
	fs.DurationVar(&cfg.DBCacheTTL, "db-cache-ttl", probe.DefaultCacheTTL, "how long a failed database probe is remembered for the same connection string, as backoff (a pass is reused for at most 1s); 0 probes on every switch")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", defaultRequestTimeout, "decision deadline when the API server sends no timeout parameter")
	fs.BoolVar(&cfg.CheckCreate, "check-create", webhook.DefaultCheckCreate, "check routes when they are created, every backend with a share of traffic a target (a denied create says to retry once the backends are Ready; GitOps tools retry); false allows every create unchecked")
	env := fs.String("database-url-env", checks.DefaultDatabaseURLEnv, "comma-separated env var names that hold the database connection string in the target's pod template")
	fs.IntVar(&cfg.MaxDatabaseURLsPerTarget, "max-database-urls-per-target", checks.DefaultMaxDatabaseURLsPerTarget, "distinct connection strings probed for one target; a target naming more is denied")
	fs.IntVar(&cfg.MaxDatabaseURLsPerRequest, "max-database-urls-per-request", checks.DefaultMaxDatabaseURLsPerRequest, "distinct connection strings probed for one update across its targets; the targets past it are denied")
	fs.IntVar(&cfg.DBMaxInFlight, "db-max-in-flight", probe.DefaultMaxInFlight, "database probes running at once, for all requests; a probe waits for a slot no longer than its request's deadline")
	fs.IntVar(&cfg.MaxChecksPerNamespace, "max-checks-per-namespace", checks.DefaultMaxDecisionsPerNamespace, "route switches checked at once for one namespace (the route's); one more is denied at once with NamespaceBusy")
	fs.IntVar(&cfg.DBProbesPerNamespacePerMinute, "db-probes-per-namespace-per-minute", checks.DefaultDatabaseURLsPerNamespacePerMinute, "distinct connection strings probed per minute for the Deployments of one namespace; past it a string is denied without a probe (DatabaseBudgetExceeded)")
	fs.BoolVar(&cfg.EnableHTTP2, "enable-http2", false, "serve the webhook over HTTP/2 as well as HTTP/1.1")
	fs.BoolVar(&cfg.SkipDatabase, "skip-database-check", false, "do not probe databases (each checked target then gets a warning)")
	fs.BoolVar(&cfg.SmokeChecks, "smoke-checks", checks.DefaultSmokeChecks, "run the smoke gate for targets that opt in with the cutover-guard.dev/smoke-path annotation (a GET on each ready pod); false: they get a warning instead")
	fs.Var(&cfg.CertRotation, "cert-rotation", "true: bootstrap the serving certificate into --cert-secret-name, inject its CA into --webhook-config-name and renew it (the in-cluster install); false: serve the tls.crt and tls.key in --cert-dir as another tool (cert-manager) or you put them there; auto: true only in a cluster (no --kubeconfig or $KUBECONFIG) with an empty --cert-dir")
	fs.StringVar(&cfg.Certs.Namespace, "namespace", certs.DefaultNamespace, "namespace of the guard's Service and certificate Secret")
	fs.StringVar(&cfg.Certs.SecretName, "cert-secret-name", certs.DefaultSecretName, "Secret (in --namespace) that keeps the CA and serving certificate; it must exist and is filled by the guard")
	fs.StringVar(&cfg.Certs.ServiceName, "service-name", certs.DefaultServiceName, "Service (in --namespace) the API server calls; the certificate names <service>.<namespace>.svc")
	fs.StringVar(&cfg.Certs.WebhookConfigName, "webhook-config-name", certs.DefaultWebhookConfigName, "ValidatingWebhookConfiguration that receives the CA as caBundle")
	fs.StringVar(&cfg.FindFrom, "find-from", findFromAPIServer, "where the checks find which ReplicaSets, pods and EndpointSlices a Service selects: apiserver (a LIST from the API server's watch cache per decision; the guard's memory does not grow with the cluster) or informers (the guard's own metadata informers, one cluster-wide watch per kind, no LIST per decision, about 3 KiB of memory per pod, ReplicaSet and EndpointSlice in the cluster; needs watch on the three); what a verdict rests on is read by a quorum GET either way")
	unknownWorkloads := fs.String("unknown-workloads", string(checks.DefaultUnknownWorkloads), "what a target whose pods belong to a controller the guard cannot judge (a Job, a custom controller) gets: deny, or warn (the endpoints and database checks still decide)")
	overriders := fs.String("override-groups", "", "comma-separated users and groups who may let a denied switch through with the cutover-guard.dev/override annotation; empty: nobody")
	fs.BoolVar(&cfg.RedactUnreadable, "redact-unreadable", webhook.DefaultRedactUnreadable, "ask the API server (SubjectAccessReview) whether the requester may get each Secret and ConfigMap a finding was read from, and show a redacted finding (its check, reason and the object to ask about) to one who may not; Events are always redacted")
	fs.StringVar(&cfg.ClientCAFile, "client-ca-file", "", "PEM CA bundle; when set, the webhook accepts only callers with a client certificate it signed (the API server, given one in its AdmissionConfiguration); read at start, restart to change it; empty: no client authentication")
	fs.StringVar(&cfg.ClientCN, "client-cn", "", "with --client-ca-file, accept only a client certificate with this Common Name (e.g. kube-apiserver); empty: any the CA signed")
	dnsNames := fs.String("cert-dns-names", "", "comma-separated extra DNS names for the serving certificate (e.g. localhost for a webhook called by URL)")
	cfg.Zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	var err error
	if cfg.PrivateCIDRs, err = parsePrefixes(*cidrs); err != nil {
		return Config{}, fmt.Errorf("--private-cidrs: %w", err)
	}
	if cfg.DatabasePorts, err = probe.ParsePorts(*ports); err != nil {
		return Config{}, fmt.Errorf("--database-ports: %w", err)
	}
	for _, n := range strings.Split(*env, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.DatabaseURLEnv = append(cfg.DatabaseURLEnv, n)
		}
	}
	cfg.Certs.CertDir = cfg.CertDir
	for _, n := range strings.Split(*dnsNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.Certs.ExtraDNSNames = append(cfg.Certs.ExtraDNSNames, n)
		}
	}
	var errs []error
	if cfg.UnknownWorkloads, err = checks.ParseUnknownWorkloads(*unknownWorkloads); err != nil {
		errs = append(errs, fmt.Errorf("--unknown-workloads: %w", err))
	}
	if cfg.OverrideGroups, err = parseOverriders(*overriders); err != nil {
		errs = append(errs, fmt.Errorf("--override-groups: %w", err))
	}
	switch {
	case cfg.ClientCAFile != "":
		pool, err := loadClientCAs(cfg.ClientCAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("--client-ca-file: %w", err))
		} else {
			cfg.ClientAuth = &clientAuth{CAs: pool, CommonName: cfg.ClientCN}
		}
	case cfg.ClientCN != "":
		errs = append(errs, errors.New("--client-cn needs --client-ca-file: without a CA no client certificate is verified"))
	}
	if cfg.CertRotation != certs.ModeOff {
		// auto may rotate: its names must be usable.
		errs = append(errs, cfg.Certs.Validate())
	}
	if cfg.FindFrom != findFromInformers && cfg.FindFrom != findFromAPIServer {
		errs = append(errs, fmt.Errorf("--find-from %q: want %s or %s", cfg.FindFrom, findFromInformers, findFromAPIServer))
	}
	if len(cfg.DatabaseURLEnv) == 0 {
		errs = append(errs, errors.New("--database-url-env: name at least one environment variable"))
	}
	if cfg.DBTimeout <= 0 {
		errs = append(errs, errors.New("--db-timeout must be positive"))
	}
	if cfg.RequestTimeout <= 0 {
		errs = append(errs, errors.New("--request-timeout must be positive"))
	}
	// The caps on a tenant's work: zero would refuse every switch.
	for _, c := range []struct {
		flag  string
		value int
	}{
		{"max-database-urls-per-target", cfg.MaxDatabaseURLsPerTarget},
		{"max-database-urls-per-request", cfg.MaxDatabaseURLsPerRequest},
		{"db-max-in-flight", cfg.DBMaxInFlight},
		{"max-checks-per-namespace", cfg.MaxChecksPerNamespace},
		{"db-probes-per-namespace-per-minute", cfg.DBProbesPerNamespacePerMinute},
	} {
		if c.value <= 0 {
			errs = append(errs, fmt.Errorf("--%s must be positive", c.flag))
		}
	}
	if cfg.DBCacheTTL < 0 {
		errs = append(errs, errors.New("--db-cache-ttl must not be negative"))
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not a TCP port", cfg.Port))
	}
	return cfg, errors.Join(errs...)
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", part)
		}
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return nil, errors.New("name at least one CIDR")
	}
	return out, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// parseOverriders splits --override-groups into user and group names; an
// empty list means nobody may override.
func parseOverriders(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	var errs []error
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch part {
		case "":
			errs = append(errs, fmt.Errorf("%q has an empty entry; list user or group names separated by commas", s))
		case "system:authenticated", "system:unauthenticated":
			errs = append(errs, fmt.Errorf("%s would let every user override the guard; list the users or groups who may", part))
		default:
			out = append(out, part)
		}
	}
	return out, errors.Join(errs...)
}
