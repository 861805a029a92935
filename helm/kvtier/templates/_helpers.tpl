{{/* Names, labels and the values the templates share. */}}

{{- define "kvtier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-based name, at most 40 characters: pod names add "-headless",
"-etcd-headless" and an ordinal, and stay DNS labels. */}}
{{- define "kvtier.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "kvtier.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kvtier.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kvtier.headless" -}}{{ include "kvtier.fullname" . }}-headless{{- end -}}
{{- define "kvtier.etcd" -}}{{ include "kvtier.fullname" . }}-etcd{{- end -}}
{{- define "kvtier.etcdHeadless" -}}{{ include "kvtier.fullname" . }}-etcd-headless{{- end -}}

{{- define "kvtier.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kvtier.labels" -}}
{{ include "kvtier.commonLabels" . }}
{{ include "kvtier.selectorLabels" . }}
{{- end -}}

{{- define "kvtier.etcdLabels" -}}
{{ include "kvtier.commonLabels" . }}
{{ include "kvtier.etcdSelectorLabels" . }}
{{- end -}}

{{- define "kvtier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvtier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: store
{{- end -}}

{{- define "kvtier.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kvtier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "kvtier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kvtier.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kvtier.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kvtier.clusterName" -}}
{{- default (include "kvtier.fullname" .) .Values.clusterName -}}
{{- end -}}

{{/* DNS suffix of the store pods: POD.<this>. */}}
{{- define "kvtier.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "kvtier.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* etcd client endpoints, one per line. */}}
{{- define "kvtier.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $etcd := include "kvtier.etcd" . -}}
{{- $domain := printf "%s.%s.svc.%s" (include "kvtier.etcdHeadless" .) .Release.Namespace .Values.clusterDomain -}}
{{- range $i := until (int .Values.etcd.replicaCount) }}
{{ printf "%s-%d.%s:2379" $etcd $i $domain }}
{{- end -}}
{{- else -}}
{{- range .Values.etcd.endpoints }}
{{ . }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Mount points inside the store container. */}}
{{- define "kvtier.tlsDir" -}}/etc/kvtier/tls{{- end -}}
{{- define "kvtier.accessDir" -}}/etc/kvtier/access{{- end -}}
{{- define "kvtier.configDir" -}}/etc/kvtier/config{{- end -}}
{{- define "kvtier.dataRoot" -}}/var/lib/kvtier{{- end -}}

{{/* Values that span several keys; values.schema.json checks the rest. */}}
{{- define "kvtier.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.allowInsecure) (not (and $v.tls.enabled $v.access.enabled)) -}}
{{- fail "allowInsecure=false needs tls.enabled and access.enabled: the server refuses plaintext or an open store on a non-loopback address" -}}
{{- end -}}
{{- if and $v.tls.clientAuth (not $v.tls.enabled) -}}
{{- fail "tls.clientAuth needs tls.enabled" -}}
{{- end -}}
{{- if and $v.etcd.enabled (gt (len $v.etcd.endpoints) 0) -}}
{{- fail "set etcd.enabled or etcd.endpoints, not both" -}}
{{- end -}}
{{- if and (gt (int $v.replicaCount) 1) (not $v.etcd.enabled) (eq (len $v.etcd.endpoints) 0) -}}
{{- fail "replicaCount > 1 needs etcd: etcd.enabled=true or etcd.endpoints" -}}
{{- end -}}
{{- if lt (int $v.replicaCount) (int $v.server.replicas) -}}
{{- fail (printf "server.replicas (%d copies of each page) exceeds replicaCount (%d nodes)" (int $v.server.replicas) (int $v.replicaCount)) -}}
{{- end -}}
{{- $shutdownS := add (int $v.server.drainTimeoutS) 10 (div (add (int64 $v.server.shutdownDemoteMs) 999) 1000) -}}
{{- if le (int $v.terminationGracePeriodSeconds) (int $shutdownS) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed server.drainTimeoutS + 10 s for open calls + server.shutdownDemoteMs (%d s): the kubelet would kill the node while it hands its pages on" (int $v.terminationGracePeriodSeconds) (int $shutdownS)) -}}
{{- end -}}
{{- if and $v.persistence.enabled (regexMatch "^[0-9]+Gi$" $v.persistence.size) -}}
{{- $volumeBytes := mul (int64 (trimSuffix "Gi" $v.persistence.size)) 1073741824 -}}
{{- if gt (int64 $v.server.disk.capacityBytes) $volumeBytes -}}
{{- fail (printf "server.disk.capacityBytes (%d) exceeds persistence.size (%s)" (int64 $v.server.disk.capacityBytes) $v.persistence.size) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The probe's action: the kubelet's gRPC probe on the server port, or,
with TLS (which that probe cannot speak), the image's kvtier-health over
TLS, presenting the node's certificate when clients must (mTLS). */}}
{{- define "kvtier.healthProbe" -}}
{{- if .tls.enabled -}}
exec:
  command:
    - kvtier-health
    - --target=127.0.0.1:{{ .port }}
    - --deadline_s=2
    - --server_name={{ .serverName }}
    - --tls_ca_file={{ .tlsDir }}/ca.crt
    {{- if .tls.clientAuth }}
    - --tls_cert_file={{ .tlsDir }}/tls.crt
    - --tls_key_file={{ .tlsDir }}/tls.key
    {{- end }}
{{- else -}}
grpc:
  port: {{ .port }}
{{- end -}}
{{- end -}}
