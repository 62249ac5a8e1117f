package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/webhook"
)

// run serves the webhook until ctx is cancelled.
func run(ctx context.Context, cfg Config) error {
	log := ctrl.Log.WithName("setup")
	restCfg, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}

	tlsOpts := []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}
	if !cfg.EnableHTTP2 {
		// HTTP/2 stays off unless asked for (CVE-2023-44487, CVE-2023-39325).
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	// With rotation the key pair comes from the certificate Secret, swapped in
	// place on renewal; without, controller-runtime watches the files in CertDir.
	var rotation *certs.Rotation
	rotate, why := cfg.CertRotation.Resolve(certs.CurrentEnvironment(cfg.Kubeconfig, cfg.CertDir))
	if rotate {
		if rotation, err = certs.New(cfg.Certs); err != nil {
			return err
		}
		tlsOpts = append(tlsOpts, rotation.TLSConfig)
		log.Info("certificate rotation on: the serving certificate is kept in a Secret, its CA injected into the webhook configuration",
			"reason", why, "secret", cfg.Certs.Namespace+"/"+cfg.Certs.SecretName, "webhookConfiguration", cfg.Certs.WebhookConfigName)
	} else {
		if err := certs.CheckKeyPair(cfg.CertDir); err != nil {
			return err
		}
		log.Info("certificate rotation off: serving tls.crt and tls.key from --cert-dir as they are, reloaded when they change; "+
			"the webhook configuration's caBundle must trust them", "reason", why, "certDir", cfg.CertDir)
	}
	if cfg.ClientAuth != nil {
		if err := cfg.ClientAuth.addSelfCheck(); err != nil {
			return err
		}
		tlsOpts = append(tlsOpts, cfg.ClientAuth.TLSConfig)
	}
	server := crwebhook.NewServer(crwebhook.Options{Port: cfg.Port, CertDir: cfg.CertDir, TLSOpts: tlsOpts})

	scheme := webhook.Scheme()
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		WebhookServer:          server,
		Metrics:                metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress: cfg.HealthAddr,
		PprofBindAddress:       cfg.PprofAddr,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	metrics := webhook.DefaultMetrics()
	if err := crmetrics.Registry.Register(certs.NewExpiryCollector(cfg.CertDir)); err != nil {
		return err
	}
	// The checks read live state from the API server; with
	// --find-from=informers their finding LISTs are answered by the guard's
	// own metadata informers (checks.FindCache says why no verdict changes).
	reader := mgr.GetAPIReader()
	if cfg.FindFrom == findFromInformers {
		finds, err := checks.NewFindCache(restCfg, reader, checks.FindCacheOptions{Observe: metrics.ObserveFind, HTTPClient: mgr.GetHTTPClient()})
		if err != nil {
			return err
		}
		if err := mgr.Add(finds); err != nil {
			return err
		}
		if err := crmetrics.Registry.Register(webhook.FindCacheTrusted(finds.Trusted)); err != nil {
			return err
		}
		reader = finds
	}
	guard := &checks.Guard{Reader: reader, DatabaseEnv: cfg.DatabaseURLEnv,
		MaxDatabaseURLsPerTarget: cfg.MaxDatabaseURLsPerTarget, MaxDatabaseURLsPerRequest: cfg.MaxDatabaseURLsPerRequest,
		MaxDecisionsPerNamespace: cfg.MaxChecksPerNamespace, DatabaseURLsPerNamespacePerMinute: cfg.DBProbesPerNamespacePerMinute,
		UnknownWorkloads: cfg.UnknownWorkloads}
	if !cfg.SkipDatabase {
		guard.Prober = probe.NewProber(probe.ProberOptions{
			PrivateCIDRs: cfg.PrivateCIDRs,
			Ports:        cfg.DatabasePorts,
			Timeout:      cfg.DBTimeout,
			CacheTTL:     cfg.DBCacheTTL,
			MaxInFlight:  cfg.DBMaxInFlight,
			Observe:      metrics.ObserveProbe,
		})
	}
	if cfg.SmokeChecks {
		guard.Smoker = checks.NewSmoker(checks.SmokeOptions{PrivateCIDRs: cfg.PrivateCIDRs, Version: buildVersion()})
	}
	var access webhook.AccessReviewer
	if cfg.RedactUnreadable {
		access = webhook.NewSubjectAccessReviewer(mgr.GetClient(), webhook.DefaultAccessReviewTTL, webhook.DefaultAccessReviewCacheSize)
	}
	for path, h := range webhook.Handlers(scheme, webhook.Options{
		Guard: guard,
		// core/v1 Events: events.k8s.io series would fold distinct denials of one route into one Event.
		Recorder:       webhook.LegacyRecorder(mgr.GetEventRecorderFor("cutover-guard")), //nolint:staticcheck // see LegacyRecorder
		Metrics:        metrics,
		CheckCreate:    cfg.CheckCreate,
		OverrideGroups: cfg.OverrideGroups,
		Access:         access,
		RequestTimeout: cfg.RequestTimeout,
	}) {
		server.Register(path, drainOnShutdown(ctx, h))
	}

	// The webhook serves once its certificate is in place and trusted: at
	// once when another tool manages it, after bootstrap and CA injection
	// when the guard rotates it. Readiness follows.
	certsReady := certs.Closed()
	if rotation != nil {
		if err := rotation.AddToManager(mgr); err != nil {
			return err
		}
		if err := rotation.Preflight(ctx); err != nil {
			return err
		}
		certsReady = rotation.Ready()
	}
	if err := mgr.Add(certs.ServeWhenReady(certsReady, server)); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// With client authentication, the check presents the process's own
	// client certificate: StartedChecker's handshake has none, and each
	// probe would be logged as a failed handshake.
	webhookReady := server.StartedChecker()
	if cfg.ClientAuth != nil {
		webhookReady = cfg.ClientAuth.readyChecker(cfg.Port)
	}
	if err := mgr.AddReadyzCheck("webhook", certs.ReadyWhen(certsReady, webhookReady)); err != nil {
		return err
	}
	log.Info("starting", "port", cfg.Port, "certDir", cfg.CertDir, "certRotation", rotation != nil, "privateCIDRs", joinPrefixes(cfg.PrivateCIDRs),
		"databasePorts", probe.FormatPorts(cfg.DatabasePorts), "dbCacheTTL", cfg.DBCacheTTL.String(),
		"dbTimeout", cfg.DBTimeout.String(), "checkCreate", cfg.CheckCreate, "unknownWorkloads", string(cfg.UnknownWorkloads), "databaseURLEnv", cfg.DatabaseURLEnv, "overrideGroups", cfg.OverrideGroups,
		"clientCAFile", cfg.ClientCAFile, "clientCN", cfg.ClientCN,
		"redactUnreadable", cfg.RedactUnreadable, "findFrom", cfg.FindFrom)
	return mgr.Start(ctx)
}

// drainOnShutdown lets a decision in flight at SIGTERM finish with its real
// verdict. The webhook server stops accepting connections on shutdown and
// waits for the requests it holds, but controller-runtime derives each
// request's context from the manager's, which shutdown cancels: the decision
// would end at once as a timeout. Detached from that, it keeps its own
// deadline (webhook.Budget) and still ends when the client goes away while
// stopping (cancelled first by the signal) has not been.
func drainOnShutdown(stopping context.Context, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		stop := context.AfterFunc(r.Context(), func() {
			if stopping.Err() == nil {
				cancel()
			}
		})
		defer stop()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("no cluster to talk to: pass --kubeconfig, set $KUBECONFIG, or run in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	// As ctrl.GetConfig does: no client-side rate limit (API Priority and
	// Fairness applies). client-go's default of 5 requests/s would hold a
	// guard started with --kubeconfig to about one switch a second.
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}
