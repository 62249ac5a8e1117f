package main

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cutover-guard/cutover-guard/certs"
)

func TestCertFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args     []string
		want     certs.Options
		rotation certs.Mode
		wantErr  string
	}{
		"defaults match the manifests": {
			want: certs.Options{Namespace: "cutover-guard", SecretName: "cutover-guard-cert", ServiceName: "cutover-guard",
				WebhookConfigName: "cutover-guard", CertDir: "/tmp/k8s-webhook-server/serving-certs"},
		},
		"every name can be changed": {
			args: []string{"--namespace=guard", "--cert-secret-name=tls", "--service-name=svc", "--webhook-config-name=vwc",
				"--cert-dir=/certs", "--cert-dns-names=localhost, guard.example.com,"},
			want: certs.Options{Namespace: "guard", SecretName: "tls", ServiceName: "svc", WebhookConfigName: "vwc",
				CertDir: "/certs", ExtraDNSNames: []string{"localhost", "guard.example.com"}},
		},
		"rotation can be left to cert-manager": {
			args:     []string{"--cert-rotation=false"},
			rotation: certs.ModeOff,
			want: certs.Options{Namespace: "cutover-guard", SecretName: "cutover-guard-cert", ServiceName: "cutover-guard",
				WebhookConfigName: "cutover-guard", CertDir: "/tmp/k8s-webhook-server/serving-certs"},
		},
		"a bad Secret name is refused": {
			args:    []string{"--cert-secret-name=Not_A_Name"},
			wantErr: "--cert-secret-name",
		},
		"rotation can be asked for, alone as a boolean": {
			args:     []string{"--cert-rotation"},
			rotation: certs.ModeOn,
			want: certs.Options{Namespace: "cutover-guard", SecretName: "cutover-guard-cert", ServiceName: "cutover-guard",
				WebhookConfigName: "cutover-guard", CertDir: "/tmp/k8s-webhook-server/serving-certs"},
		},
		"a mode that is none of true, false, auto is refused": {
			args:    []string{"--cert-rotation=yes"},
			wantErr: "want true (rotate through the certificate Secret), false (serve --cert-dir as it is) or auto",
		},
		"names are not checked without rotation": {
			args:     []string{"--cert-rotation=false", "--cert-secret-name=Not_A_Name"},
			rotation: certs.ModeOff,
			want: certs.Options{Namespace: "cutover-guard", SecretName: "Not_A_Name", ServiceName: "cutover-guard",
				WebhookConfigName: "cutover-guard", CertDir: "/tmp/k8s-webhook-server/serving-certs"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := parseFlags("cutover-guard", tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags() = %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.rotation
			if want == "" {
				want = certs.DefaultMode
			}
			if cfg.CertRotation != want {
				t.Errorf("CertRotation = %q, want %q", cfg.CertRotation, want)
			}
			if diff := cmp.Diff(tc.want, cfg.Certs); diff != "" {
				t.Errorf("certificate options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	if _, err := parseFlags("cutover-guard", []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp (main exits 0)", err)
	}
}
