{{/* Labels on every object: the manifests' two, and Helm's own. */}}
{{- define "cutover-guard.labels" -}}
app.kubernetes.io/name: cutover-guard
app.kubernetes.io/part-of: cutover-guard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The guard's pods. */}}
{{- define "cutover-guard.selectorLabels" -}}
app.kubernetes.io/name: cutover-guard
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "cutover-guard.certManager" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}true{{ else if eq .Values.certificates.mode "rotation" }}{{ else }}{{ fail (printf "certificates.mode %q: want rotation or cert-manager" .Values.certificates.mode) }}{{ end -}}
{{- end -}}

{{/* --flag=value when value is set (not null, not empty). */}}
{{- define "cutover-guard.flag" -}}
{{- $v := index . 1 -}}
{{- if not (kindIs "invalid" $v) -}}
{{- if kindIs "slice" $v -}}
{{- if $v }}
- --{{ index . 0 }}={{ join "," $v }}
{{- end -}}
{{- else if kindIs "bool" $v }}
- --{{ index . 0 }}={{ $v }}
{{- else if ne (toString $v) "" }}
- --{{ index . 0 }}={{ $v }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ", watch" on the find cache's kinds unless guard.findFrom is apiserver. */}}
{{- define "cutover-guard.findWatch" -}}
{{- if ne (.Values.guard.findFrom | default "") "apiserver" }}, watch{{ end -}}
{{- end }}
