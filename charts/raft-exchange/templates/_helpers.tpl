{{/* The release-scoped name of the operator's objects. */}}
{{- define "raft-exchange.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "raft-exchange.serviceAccountName" -}}
{{- default (include "raft-exchange.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "raft-exchange.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "raft-exchange.selectorLabels" -}}
app.kubernetes.io/name: raft-exchange
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "raft-exchange.labels" -}}
{{ include "raft-exchange.selectorLabels" . }}
app.kubernetes.io/part-of: raft-exchange
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.operator.image.tag | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
