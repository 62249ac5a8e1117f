package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The guards of the lab read the cluster as the install runs them: as the
// ServiceAccount cutover-guard/cutover-guard, bound to the ClusterRole of
// manifests/rbac (applied from this checkout), with a bound token from the
// TokenRequest API. So each of the guard's reads pays what it pays in a
// cluster (a cached token authentication, an RBAC evaluation), not what an
// admin's client certificate costs (a certificate chain verified per
// request, and no RBAC: system:masters is allowed everything).

const (
	guardNamespace      = "cutover-guard"
	guardServiceAccount = "cutover-guard"
)

// guardKubeconfig applies manifests/rbac, requests a token for the guard's
// ServiceAccount and writes a kubeconfig that uses it; it returns its path.
func (l *lab) guardKubeconfig(ctx context.Context) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: guardNamespace}}
	if _, err := l.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	out, err := l.cluster.KubectlCommand(ctx, "apply", "-k", filepath.Join(l.s.repo, "manifests/rbac")).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl apply -k manifests/rbac: %w: %s", err, out)
	}
	expiry := int64(24 * 60 * 60)
	tr, err := l.cs.CoreV1().ServiceAccounts(guardNamespace).CreateToken(ctx, guardServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", guardNamespace, guardServiceAccount, err)
	}
	cfg := l.cluster.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["guard"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["guard"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "guard"}
	kc.CurrentContext = "guard"
	path := filepath.Join(l.s.rawDir, "guard-kubeconfig")
	if err := os.MkdirAll(l.s.rawDir, 0o755); err != nil {
		return "", err
	}
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", err
	}
	return path, nil
}
