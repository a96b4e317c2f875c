{{/* Names: the release name (or fullnameOverride), then -operator / -gateway. */}}
{{- define "smpp.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "smpp.operator.name" -}}
{{- printf "%s-operator" (include "smpp.fullname" .) -}}
{{- end -}}

{{- define "smpp.gateway.name" -}}
{{- printf "%s-gateway" (include "smpp.fullname" .) -}}
{{- end -}}

{{- define "smpp.operator.serviceAccountName" -}}
{{- default (include "smpp.operator.name" .) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "smpp.gateway.serviceAccountName" -}}
{{- default (include "smpp.gateway.name" .) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{- define "smpp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: smpp-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: include "smpp.selector" (list . "operator") */}}
{{- define "smpp.selector" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ printf "smpp-%s" (index . 1) }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{- end -}}

{{- define "smpp.componentLabels" -}}
{{ include "smpp.labels" (index . 0) }}
app.kubernetes.io/name: {{ printf "smpp-%s" (index . 1) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "smpp.image" -}}
{{- $img := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* The namespaces the operator watches (release namespace first, no repeats); empty when
cluster-wide. */}}
{{- define "smpp.operator.watchedNamespaces" -}}
{{- if not .Values.operator.watch.clusterWide -}}
{{- $all := prepend .Values.operator.watch.namespaces .Release.Namespace | uniq -}}
{{- join "," $all -}}
{{- end -}}
{{- end -}}

{{/* What the operator may do on SmppVendors, SmppAccounts, their Secrets and Events: one
list for the Roles of each watched namespace and for the cluster-wide ClusterRole. */}}
{{- define "smpp.operator.rules" -}}
- apiGroups: ["smpp.io"]
  resources: ["smppvendors", "smppaccounts"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["smpp.io"]
  resources: ["smppvendors/status", "smppaccounts/status"]
  verbs: ["patch"]
- apiGroups: ["smpp.io"]
  resources: ["smppvendors/finalizers", "smppaccounts/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "smpp.podSecurity" -}}
{{- if not .Values.podSecurityContext.runAsNonRoot -}}
{{- fail "podSecurityContext.runAsNonRoot must stay true: the images run as user 65532" -}}
{{- end -}}
{{- end -}}
