{{/* Names, labels and the watched namespaces, shared by every template. */}}
{{- define "splitserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "splitserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "splitserve.operatorName" -}}
{{- printf "%s-operator" (include "splitserve.fullname" .) }}
{{- end }}

{{- define "splitserve.selectorLabels" -}}
{{ include "splitserve.instanceLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "splitserve.instanceLabels" -}}
app.kubernetes.io/name: {{ include "splitserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "splitserve.labels" -}}
{{ include "splitserve.selectorLabels" . }}
{{ include "splitserve.commonLabels" . }}
{{- end }}

{{/* Labels of objects that are not the operator's own (the dashboards). */}}
{{- define "splitserve.commonLabels" -}}
app.kubernetes.io/part-of: splitserve
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "splitserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "splitserve.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "splitserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches, one per line; empty when it watches the cluster. */}}
{{- define "splitserve.watchedNamespaces" -}}
{{- if eq .Values.watch.scope "namespaces" }}
{{- $list := .Values.watch.namespaces | default (list .Release.Namespace) }}
{{- range $list }}
{{ . }}
{{- end }}
{{- end }}
{{- end }}
