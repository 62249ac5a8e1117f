package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// secretSync watches the certificate Secret (by name) and keeps its key pair
// in memory for the TLS handshake and on disk in the certificate folder.
type secretSync struct {
	client kubernetes.Interface
	key    types.NamespacedName
	dir    string
	log    logr.Logger

	mu      sync.Mutex
	current *tls.Certificate
	certPEM []byte // of current, to skip unchanged updates
}

// NeedLeaderElection is false: every replica serves.
func (s *secretSync) NeedLeaderElection() bool { return false }

// Start watches the Secret until ctx ends.
func (s *secretSync) Start(ctx context.Context) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("certificate folder: %w", err)
	}
	lw := toolscache.NewListWatchFromClient(s.client.CoreV1().RESTClient(), "secrets", s.key.Namespace,
		fields.OneTermEqualSelector("metadata.name", s.key.Name))
	_, informer := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Secret{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.apply(obj) },
			UpdateFunc: func(_, obj any) { s.apply(obj) },
		},
	})
	informer.RunWithContext(ctx)
	return nil
}

func (s *secretSync) apply(obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	if err := s.load(secret.Data[CertName], secret.Data[KeyName]); err != nil {
		// The rotator fills or repairs the Secret; wait for its next update.
		s.log.Info("certificate Secret holds no usable key pair yet", "secret", s.key.String(), "reason", err.Error())
	}
}

// load makes certPEM and keyPEM the served pair and writes them to the
// certificate folder, if they form a valid pair and differ from the current one.
func (s *secretSync) load(certPEM, keyPEM []byte) error {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return errors.New("no " + CertName + " or " + KeyName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(certPEM, s.certPEM) {
		return nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error of X509KeyPair never quotes key material.
		return fmt.Errorf("not a key pair: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("not a certificate: %w", err)
	}
	pair.Leaf = leaf
	// The key first: the rotator checks for the certificate file to say the
	// certificate is in place.
	if err := writeFile(s.dir, KeyName, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(s.dir, CertName, certPEM, 0o644); err != nil {
		return err
	}
	s.current, s.certPEM = &pair, bytes.Clone(certPEM)
	s.log.Info("serving certificate loaded", "secret", s.key.String(), "serial", leaf.SerialNumber.String(),
		"notAfter", leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "dnsNames", leaf.DNSNames)
	return nil
}

func (s *secretSync) certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return s.current, nil
}

// writeFile replaces dir/name atomically (a reader sees the old or the new
// content, never a partial file).
func writeFile(dir, name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// After the rename there is nothing left to remove; before it, the
	// error that matters is the one returned.
	defer func() { _ = os.Remove(tmp) }()
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}
