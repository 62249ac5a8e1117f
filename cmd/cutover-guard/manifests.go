package main

// The guard's permissions and webhook configuration, as controller-gen
// markers; `make manifests` generates manifests/rbac/role.yaml and
// manifests/webhook/manifests.yaml from them, and a test fails when those
// files are stale. The certificate rotator's own permissions are in package
// certs.
//
// Package checks reads live state (never list and watch for a cache), and
// reads Secrets and ConfigMaps only by name, for the database check. It reads
// Deployments by name too: the one named like the Service and those that
// control the ReplicaSets the Service's selector matches (listed by label),
// and Pods by name, for the smoke gate (each endpoint's pod, before calling
// its address):
//
// +kubebuilder:rbac:groups="",resources=services,verbs=get
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=list
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=referencegrants,verbs=get;list
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get
//
// Package webhook records a CutoverDenied Event on a denied route (core/v1,
// created and then patched as it repeats; see webhook.LegacyRecorder):
//
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
//
// Route updates only (never create unless --check-create, never the status
// subresource: it is not listed), and only when spec.rules changed: the
// matchCondition keeps label, annotation and parentRef edits away from the
// guard altogether. Objects in kube-system and the guard's own namespace are
// never checked, so the guard cannot block the cluster from repairing itself.
//
// +kubebuilder:webhookconfiguration:mutating=false,name=cutover-guard
// +kubebuilder:webhook:path=/validate-httproute,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,matchPolicy=Equivalent,groups=gateway.networking.k8s.io,resources=httproutes,verbs=update,versions=v1,name=httproute.cutover-guard.dev,admissionReviewVersions=v1,serviceName=cutover-guard,serviceNamespace=cutover-guard,servicePort=443,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","cutover-guard"]}]},"matchConditions":[{"name":"spec-rules-changed","expression":"oldObject == null || !has(object.spec) || !has(oldObject.spec) || has(object.spec.rules) != has(oldObject.spec.rules) || (has(object.spec.rules) && object.spec.rules != oldObject.spec.rules)"}]}`
// +kubebuilder:webhook:path=/validate-grpcroute,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,matchPolicy=Equivalent,groups=gateway.networking.k8s.io,resources=grpcroutes,verbs=update,versions=v1,name=grpcroute.cutover-guard.dev,admissionReviewVersions=v1,serviceName=cutover-guard,serviceNamespace=cutover-guard,servicePort=443,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","cutover-guard"]}]},"matchConditions":[{"name":"spec-rules-changed","expression":"oldObject == null || !has(object.spec) || !has(oldObject.spec) || has(object.spec.rules) != has(oldObject.spec.rules) || (has(object.spec.rules) && object.spec.rules != oldObject.spec.rules)"}]}`
