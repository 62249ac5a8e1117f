package certs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModeResolve(t *testing.T) {
	empty := t.TempDir()
	withPair := t.TempDir()
	for _, name := range []string{CertName, KeyName} {
		if err := os.WriteFile(filepath.Join(withPair, name), []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	halfPair := t.TempDir()
	if err := os.WriteFile(filepath.Join(halfPair, CertName), []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	inCluster := Environment{InCluster: true, CertDir: empty}
	for name, tc := range map[string]struct {
		mode   Mode
		env    Environment
		rotate bool
		why    string
	}{
		"auto in a pod with an empty folder rotates": {ModeAuto, inCluster, true, "in cluster"},
		"auto with --kubeconfig serves the files":    {ModeAuto, Environment{Kubeconfig: "/k", InCluster: true, CertDir: empty}, false, "--kubeconfig"},
		"auto with $KUBECONFIG serves the files":     {ModeAuto, Environment{KubeconfigEnv: "/k", InCluster: true, CertDir: empty}, false, "$KUBECONFIG"},
		"auto outside a pod serves the files":        {ModeAuto, Environment{CertDir: empty}, false, "KUBERNETES_SERVICE_HOST"},
		"auto with a key pair in place serves it":    {ModeAuto, Environment{InCluster: true, CertDir: withPair}, false, "already holds a key pair"},
		"auto with half a key pair rotates":          {ModeAuto, Environment{InCluster: true, CertDir: halfPair}, true, "in cluster"},
		"true rotates even out of cluster":           {ModeOn, Environment{Kubeconfig: "/k", CertDir: withPair}, true, "--cert-rotation=true"},
		"false serves the files even in a pod":       {ModeOff, inCluster, false, "--cert-rotation=false"},
	} {
		t.Run(name, func(t *testing.T) {
			rotate, why := tc.mode.Resolve(tc.env)
			if rotate != tc.rotate || !strings.Contains(why, tc.why) {
				t.Errorf("Resolve() = %v, %q; want %v and a reason naming %q", rotate, why, tc.rotate, tc.why)
			}
		})
	}
}

func TestCheckKeyPair(t *testing.T) {
	dir := t.TempDir()
	err := CheckKeyPair(dir)
	if err == nil || !strings.Contains(err.Error(), "has no tls.crt and no tls.key") || !strings.Contains(err.Error(), "--cert-rotation=true") {
		t.Errorf("empty folder: %v, want both files named and --cert-rotation=true offered", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertName), []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeyPair(dir); err == nil || !strings.Contains(err.Error(), "has no tls.key:") {
		t.Errorf("no key: %v, want tls.key named", err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyName), []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeyPair(dir); err != nil {
		t.Errorf("key pair in place: %v", err)
	}
}
