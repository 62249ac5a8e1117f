package certs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Mode says whether the guard keeps its own serving certificate
// (--cert-rotation).
type Mode string

const (
	// ModeAuto rotates only in a cluster, and only when the certificate
	// folder holds no key pair: out of cluster (--kubeconfig or
	// $KUBECONFIG) or with a key pair already in place the files are
	// served as they are.
	ModeAuto Mode = "auto"
	// ModeOn bootstraps, injects and rotates the certificate through the
	// certificate Secret, as the in-cluster install does.
	ModeOn Mode = "true"
	// ModeOff serves the key pair in the certificate folder as another
	// tool (cert-manager, a person) writes it.
	ModeOff Mode = "false"
)

// DefaultMode is --cert-rotation's default. The manifests pass ModeOn
// explicitly: a restarted container finds the key pair it wrote before
// in its folder, and must keep rotating.
const DefaultMode = ModeAuto

// String implements flag.Value.
func (m *Mode) String() string {
	if m == nil || *m == "" {
		return string(DefaultMode)
	}
	return string(*m)
}

// Set implements flag.Value.
func (m *Mode) Set(s string) error {
	switch Mode(s) {
	case ModeAuto, ModeOn, ModeOff:
		*m = Mode(s)
		return nil
	}
	return fmt.Errorf("%q: want true (rotate through the certificate Secret), false (serve --cert-dir as it is) or auto", s)
}

// IsBoolFlag lets --cert-rotation alone mean --cert-rotation=true.
func (m *Mode) IsBoolFlag() bool { return true }

// Environment is what Resolve looks at besides the mode.
type Environment struct {
	// Kubeconfig is the --kubeconfig flag; KubeconfigEnv is $KUBECONFIG.
	Kubeconfig, KubeconfigEnv string
	// InCluster: $KUBERNETES_SERVICE_HOST is set (a pod).
	InCluster bool
	// CertDir is the certificate folder.
	CertDir string
}

// CurrentEnvironment reads the environment of this process.
func CurrentEnvironment(kubeconfig, certDir string) Environment {
	return Environment{
		Kubeconfig:    kubeconfig,
		KubeconfigEnv: os.Getenv("KUBECONFIG"),
		InCluster:     os.Getenv("KUBERNETES_SERVICE_HOST") != "",
		CertDir:       certDir,
	}
}

// Resolve says whether to rotate, and why, in words for the start-up log.
func (m Mode) Resolve(env Environment) (rotate bool, why string) {
	switch m {
	case ModeOn:
		return true, "--cert-rotation=true"
	case ModeOff:
		return false, "--cert-rotation=false"
	}
	switch {
	case env.Kubeconfig != "":
		return false, "out of cluster (--kubeconfig)"
	case env.KubeconfigEnv != "":
		return false, "out of cluster ($KUBECONFIG)"
	case !env.InCluster:
		return false, "out of cluster (no $KUBERNETES_SERVICE_HOST)"
	case HasKeyPair(env.CertDir):
		return false, "--cert-dir already holds a key pair"
	}
	return true, "in cluster with an empty --cert-dir"
}

// HasKeyPair reports whether dir holds both tls.crt and tls.key.
func HasKeyPair(dir string) bool {
	for _, name := range []string{CertName, KeyName} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// CheckKeyPair is the start-up check of a guard that serves dir as it is:
// a missing key pair is named with what to do, instead of the webhook
// server's bare "no such file".
func CheckKeyPair(dir string) error {
	var missing []string
	for _, name := range []string{CertName, KeyName} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("--cert-dir %s has no %s: put the PEM tls.crt and tls.key the webhook serves there, "+
		"or, in a cluster with the guard's certificate Secret (manifests/default), pass --cert-rotation=true", dir, strings.Join(missing, " and no "))
}
