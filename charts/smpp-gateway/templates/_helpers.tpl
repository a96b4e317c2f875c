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

{{/* Where the SMPP TLS Secret is mounted in the gateway container. */}}
{{- define "smpp.gateway.smppTlsDir" -}}
/etc/smpp-gateway/smpp-tls
{{- end -}}

{{/* The gateway's SMPP server flags (docs/customers.md, "For operators"), as container args:
the listeners, the TLS files, and only the limits that are set (null: the gateway's default).
Refuses a server with no listener and ports that collide. */}}
{{- define "smpp.gateway.smppArgs" -}}
{{- $s := .Values.smppServer -}}
{{- if $s.enabled -}}
{{- if not (or $s.plain.enabled $s.tls.secretName) -}}
{{- fail "smppServer.plain.enabled is false and smppServer.tls.secretName is empty: the SMPP server would have no listener (set a kubernetes.io/tls Secret, or smppServer.enabled=false)" -}}
{{- end -}}
{{- $http := int .Values.gateway.httpPort -}}
{{- if and $s.plain.enabled (eq (int $s.plain.port) $http) -}}
{{- fail (printf "smppServer.plain.port (%d) is gateway.httpPort: pick another port" $http) -}}
{{- end -}}
{{- if and $s.tls.secretName (or (eq (int $s.tls.port) $http) (and $s.plain.enabled (eq (int $s.tls.port) (int $s.plain.port)))) -}}
{{- fail (printf "smppServer.tls.port (%d) is already gateway.httpPort or smppServer.plain.port: pick another port" (int $s.tls.port)) -}}
{{- end -}}
{{- if $s.plain.enabled }}
- {{ printf "--smpp-addr=0.0.0.0:%d" (int $s.plain.port) | quote }}
{{- end }}
{{- if $s.tls.secretName }}
- {{ printf "--smpp-tls-addr=0.0.0.0:%d" (int $s.tls.port) | quote }}
- {{ printf "--smpp-tls-cert-file=%s/tls.crt" (include "smpp.gateway.smppTlsDir" .) | quote }}
- {{ printf "--smpp-tls-key-file=%s/tls.key" (include "smpp.gateway.smppTlsDir" .) | quote }}
{{- end }}
{{- with $s.systemId }}
- {{ printf "--smpp-system-id=%s" . | quote }}
{{- end }}
{{- $flags := dict "maxConnections" "max-connections" "window" "window" "maxPduBytes" "max-pdu-bytes" "idleTimeoutSeconds" "idle-timeout-seconds" "writerQueue" "writer-queue" "responseTimeoutSeconds" "response-timeout-seconds" "failedBindsPerMinute" "failed-binds-per-minute" }}
{{- range $key, $flag := $flags }}
{{- $v := index $s.limits $key }}
{{- if not (kindIs "invalid" $v) }}
- {{ printf "--smpp-%s=%d" $flag (int64 $v) | quote }}
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}
