package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/webhook"
)

func TestParseFlags(t *testing.T) {
	tests := map[string]struct {
		args    []string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		"defaults match the documented interface": {
			check: func(t *testing.T, c Config) {
				if c.Port != 9443 || c.MetricsAddr != ":8080" || c.HealthAddr != ":8081" || c.DBTimeout != 2*time.Second || !c.CheckCreate {
					t.Errorf("unexpected defaults: %+v", c)
				}
				if diff := cmp.Diff([]string{"DATABASE_URL"}, c.DatabaseURLEnv); diff != "" {
					t.Errorf("database env (-want +got):\n%s", diff)
				}
				if len(c.PrivateCIDRs) != 5 || !c.PrivateCIDRs[0].Contains(netip.MustParseAddr("10.1.2.3")) {
					t.Errorf("private CIDRs = %v", c.PrivateCIDRs)
				}
			},
		},
		"private CIDRs and env names are parsed and trimmed": {
			args: []string{"--private-cidrs=127.0.0.1/32, 10.0.0.0/8", "--database-url-env=DATABASE_URL, DB_URL,", "--db-timeout=500ms"},
			check: func(t *testing.T, c Config) {
				want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
				if diff := cmp.Diff(want, c.PrivateCIDRs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
					t.Errorf("CIDRs (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"DATABASE_URL", "DB_URL"}, c.DatabaseURLEnv); diff != "" {
					t.Errorf("env (-want +got):\n%s", diff)
				}
				if c.DBTimeout != 500*time.Millisecond {
					t.Errorf("db timeout = %v", c.DBTimeout)
				}
			},
		},
		"a garbage CIDR names itself":   {args: []string{"--private-cidrs=10.0.0.0/8,intranet"}, wantErr: `--private-cidrs: "intranet" is not a CIDR such as 10.0.0.0/8`},
		"an empty CIDR list is refused": {args: []string{"--private-cidrs=,"}, wantErr: "--private-cidrs: name at least one CIDR"},
		"database ports and ranges are parsed": {
			args: []string{"--database-ports=5432, 20000-20002"},
			check: func(t *testing.T, c Config) {
				if diff := cmp.Diff([]uint16{5432, 20000, 20001, 20002}, c.DatabasePorts); diff != "" {
					t.Errorf("ports (-want +got):\n%s", diff)
				}
			},
		},
		"a garbage database port names itself":   {args: []string{"--database-ports=5432,pg"}, wantErr: `--database-ports: "pg" is not a port or a range such as 20000-20100`},
		"an empty database port list is refused": {args: []string{"--database-ports=,"}, wantErr: "--database-ports: name at least one port"},
		"an empty env list is refused":           {args: []string{"--database-url-env= , "}, wantErr: "--database-url-env: name at least one environment variable"},
		"a zero db timeout is refused":           {args: []string{"--db-timeout=0s"}, wantErr: "--db-timeout must be positive"},
		"a port out of range is refused":         {args: []string{"--port=70000"}, wantErr: "--port 70000 is not a TCP port"},
		"stray arguments are refused":            {args: []string{"serve"}, wantErr: "unexpected arguments: serve"},
		"an unknown flag is refused":             {args: []string{"--no-such-flag"}, wantErr: "flag provided but not defined: -no-such-flag"},
		"several problems are all named":         {args: []string{"--db-timeout=-1s", "--request-timeout=0s"}, wantErr: "--db-timeout must be positive\n--request-timeout must be positive"},
		"a negative cache TTL is refused":        {args: []string{"--db-cache-ttl=-1s"}, wantErr: "--db-cache-ttl must not be negative"},
		"zero caps are refused": {
			args:    []string{"--max-database-urls-per-target=0", "--max-database-urls-per-request=0", "--db-max-in-flight=0"},
			wantErr: "--max-database-urls-per-target must be positive\n--max-database-urls-per-request must be positive\n--db-max-in-flight must be positive",
		},
		"zero or negative per-namespace bounds are refused": {
			args:    []string{"--max-checks-per-namespace=0", "--db-probes-per-namespace-per-minute=-1"},
			wantErr: "--max-checks-per-namespace must be positive\n--db-probes-per-namespace-per-minute must be positive",
		},
		"nobody may override by default": {
			check: func(t *testing.T, c Config) {
				if c.OverrideGroups != nil {
					t.Errorf("override groups = %q, want none", c.OverrideGroups)
				}
			},
		},
		"override groups are parsed and trimmed": {
			args: []string{"--override-groups=sre, release-bot"},
			check: func(t *testing.T, c Config) {
				if diff := cmp.Diff([]string{"sre", "release-bot"}, c.OverrideGroups); diff != "" {
					t.Errorf("override groups (-want +got):\n%s", diff)
				}
			},
		},
		"an empty override group entry is refused": {
			args: []string{"--override-groups=sre,,release-bot"}, wantErr: `--override-groups: "sre,,release-bot" has an empty entry; list user or group names separated by commas`,
		},
		"unknown workloads can be made a warning": {
			args: []string{"--unknown-workloads=warn"},
			check: func(t *testing.T, c Config) {
				if c.UnknownWorkloads != checks.UnknownWorkloadsWarn {
					t.Errorf("unknown workloads = %q, want warn", c.UnknownWorkloads)
				}
			},
		},
		"an unknown-workloads value other than deny or warn is refused": {
			args: []string{"--unknown-workloads=allow"}, wantErr: `--unknown-workloads: "allow" is not deny or warn`,
		},
		"an override group every user is in is refused": {
			args: []string{"--override-groups=system:authenticated"}, wantErr: "--override-groups: system:authenticated would let every user override the guard",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := parseFlags("cutover-guard", tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// Every flag defaults to the Default* value of the package that owns the
// setting, so a default changes in one place.
func TestFlagDefaultsArePackageDefaults(t *testing.T) {
	c, err := parseFlags("cutover-guard", nil)
	if err != nil {
		t.Fatal(err)
	}
	type defaults struct {
		Port                     int
		MetricsAddr, PprofAddr   string
		FindFrom                 string
		PrivateCIDRs             []netip.Prefix
		DatabasePorts            []uint16
		DBTimeout, DBCacheTTL    time.Duration
		RequestTimeout           time.Duration
		DatabaseURLEnv           []string
		MaxURLsPerTarget         int
		MaxURLsPerRequest        int
		DBMaxInFlight            int
		MaxChecksPerNamespace    int
		DBProbesPerNamespace     int
		Namespace, SecretName    string
		ServiceName, WebhookName string
		RedactUnreadable         bool
		UnknownWorkloads         checks.UnknownWorkloads
		CheckCreate              bool
		SmokeChecks              bool
		CertRotation             certs.Mode
	}
	want := defaults{
		Port: crwebhook.DefaultPort, MetricsAddr: metricsserver.DefaultBindAddress, PprofAddr: "0", FindFrom: findFromAPIServer,
		PrivateCIDRs: probe.DefaultPrivateCIDRs(), DatabasePorts: probe.DefaultDatabasePorts,
		DBTimeout: probe.DefaultTimeout, DBCacheTTL: probe.DefaultCacheTTL,
		RequestTimeout: defaultRequestTimeout, DatabaseURLEnv: []string{checks.DefaultDatabaseURLEnv},
		MaxURLsPerTarget: checks.DefaultMaxDatabaseURLsPerTarget, MaxURLsPerRequest: checks.DefaultMaxDatabaseURLsPerRequest,
		DBMaxInFlight:         probe.DefaultMaxInFlight,
		MaxChecksPerNamespace: checks.DefaultMaxDecisionsPerNamespace, DBProbesPerNamespace: checks.DefaultDatabaseURLsPerNamespacePerMinute,
		Namespace: certs.DefaultNamespace, SecretName: certs.DefaultSecretName,
		ServiceName: certs.DefaultServiceName, WebhookName: certs.DefaultWebhookConfigName,
		RedactUnreadable: webhook.DefaultRedactUnreadable,
		UnknownWorkloads: checks.DefaultUnknownWorkloads,
		CheckCreate:      webhook.DefaultCheckCreate,
		SmokeChecks:      checks.DefaultSmokeChecks,
		CertRotation:     certs.DefaultMode,
	}
	got := defaults{
		Port: c.Port, MetricsAddr: c.MetricsAddr, PprofAddr: c.PprofAddr, FindFrom: c.FindFrom,
		PrivateCIDRs: c.PrivateCIDRs, DatabasePorts: c.DatabasePorts,
		DBTimeout: c.DBTimeout, DBCacheTTL: c.DBCacheTTL,
		RequestTimeout: c.RequestTimeout, DatabaseURLEnv: c.DatabaseURLEnv,
		MaxURLsPerTarget: c.MaxDatabaseURLsPerTarget, MaxURLsPerRequest: c.MaxDatabaseURLsPerRequest,
		DBMaxInFlight:         c.DBMaxInFlight,
		MaxChecksPerNamespace: c.MaxChecksPerNamespace, DBProbesPerNamespace: c.DBProbesPerNamespacePerMinute,
		Namespace: c.Certs.Namespace, SecretName: c.Certs.SecretName,
		ServiceName: c.Certs.ServiceName, WebhookName: c.Certs.WebhookConfigName,
		RedactUnreadable: c.RedactUnreadable,
		UnknownWorkloads: c.UnknownWorkloads,
		CheckCreate:      c.CheckCreate,
		SmokeChecks:      c.SmokeChecks,
		CertRotation:     c.CertRotation,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("flag defaults (-package defaults +flags):\n%s", diff)
	}
}
