{{/* Names, labels and small shared pieces of the EdgeModel chart. */}}

{{- define "edgemodel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgemodel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are shared by every release: the namespace keeps names apart. */}}
{{- define "edgemodel.clusterName" -}}
{{- printf "%s-%s" (include "edgemodel.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Labels on every object; app.kubernetes.io/part-of=edgemodel also lets the sandbox's pod
runner pick the pods up and the NetworkPolicy admit them to the artifact store. */}}
{{- define "edgemodel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: edgemodel
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "edgemodel.operatorSelector" -}}
app.kubernetes.io/name: {{ include "edgemodel.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgemodel.storeSelector" -}}
app.kubernetes.io/name: edgemodel-artifacts
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgemodel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "edgemodel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "edgemodel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "edgemodel.runtimeImage" -}}
{{- default (include "edgemodel.image" .) .Values.runtime.image -}}
{{- end -}}

{{/* Namespaced RBAC grants nothing outside the watched namespaces, so they must be named. */}}
{{- define "edgemodel.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (not .Values.watchNamespaces) -}}
{{- fail "rbac.scope=namespaced needs watchNamespaces: the namespaces whose EdgeModels the operator watches" -}}
{{- end -}}
{{- end -}}

{{- define "edgemodel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "edgemodel.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
