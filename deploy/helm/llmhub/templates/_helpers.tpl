{{/* Names: <release>-llmhub unless the release is already named llmhub. */}}
{{- define "llmhub.fullname" -}}
{{- if contains "llmhub" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-llmhub" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmhub.labels" -}}
app.kubernetes.io/name: llmhub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector of one component: api, gateway, worker-<name>, migrations. */}}
{{- define "llmhub.selector" -}}
app.kubernetes.io/name: llmhub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmhub.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "llmhub.serviceAccount" -}}
{{- .Values.serviceAccount.name | default (include "llmhub.fullname" .) -}}
{{- end -}}

{{- define "llmhub.workerServiceAccount" -}}
{{- .Values.worker.serviceAccount.name | default (printf "%s-worker" (include "llmhub.fullname" .)) -}}
{{- end -}}

{{/* The ClusterRole each tenant namespace's RoleBinding names (cluster-scoped: unique per release namespace). */}}
{{- define "llmhub.tenantRole" -}}
{{- printf "%s-%s-tenant" .Release.Namespace (include "llmhub.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmhub.temporalTls" -}}
{{- if or .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret .Values.temporal.apiKey.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* LLMHUB_CLUSTERS: clusters with a kubeconfig Secret read it from where workers mount it. */}}
{{- define "llmhub.clustersJson" -}}
{{- $out := dict -}}
{{- range $name, $c := .Values.clusters -}}
{{- $entry := dict -}}
{{- if $c.kubeconfigSecret -}}{{- $_ := set $entry "kubeconfig" (printf "/etc/llmhub/clusters/%s/kubeconfig" $name) -}}{{- end -}}
{{- if $c.defaultResources -}}{{- $_ := set $entry "defaultResources" $c.defaultResources -}}{{- end -}}
{{- if $c.nodeSelector -}}{{- $_ := set $entry "nodeSelector" $c.nodeSelector -}}{{- end -}}
{{- if $c.tolerations -}}{{- $_ := set $entry "tolerations" $c.tolerations -}}{{- end -}}
{{- if $c.serviceAddress -}}{{- $_ := set $entry "serviceAddress" $c.serviceAddress -}}{{- end -}}
{{- $_ := set $out $name $entry -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Env every process reads (common/config.ts): the ConfigMap plus the Secret references. */}}
{{- define "llmhub.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.existingSecret is required" .Values.postgresql.existingSecret }}
      key: {{ .Values.postgresql.key }}
{{- if .Values.s3.existingSecret }}
- name: S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- if .Values.temporal.apiKey.existingSecret }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.temporal.apiKey.existingSecret }}
      key: {{ .Values.temporal.apiKey.key }}
{{- end }}
{{- if .Values.temporal.tls.existingSecret }}
- name: TEMPORAL_TLS_CERT_FILE
  value: /etc/llmhub/temporal-tls/{{ .Values.temporal.tls.certKey }}
- name: TEMPORAL_TLS_KEY_FILE
  value: /etc/llmhub/temporal-tls/{{ .Values.temporal.tls.keyKey }}
{{- if .Values.temporal.tls.caKey }}
- name: TEMPORAL_TLS_CA_FILE
  value: /etc/llmhub/temporal-tls/{{ .Values.temporal.tls.caKey }}
{{- end }}
{{- end }}
{{- if and (eq .Values.vectorStore.type "qdrant") .Values.vectorStore.qdrant.apiKey.existingSecret }}
- name: QDRANT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.vectorStore.qdrant.apiKey.existingSecret }}
      key: {{ .Values.vectorStore.qdrant.apiKey.key }}
{{- end }}
{{- end -}}

{{- define "llmhub.envFrom" -}}
- configMapRef:
    name: {{ include "llmhub.fullname" . }}
{{- end -}}

{{/* Volumes every pod has: /tmp (the root filesystem is read-only) and the Temporal client certificate. */}}
{{- define "llmhub.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  secret:
    secretName: {{ .Values.temporal.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "llmhub.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  mountPath: /etc/llmhub/temporal-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "llmhub.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
