{{/*
Names. The release's fullname is "<release>-kubenpu" (or just "<release>" when the release
name already contains the chart name), trimmed to 63 characters as label values must be.
*/}}
{{- define "kubenpu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubenpu.fullname" -}}
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

{{/* "<fullname>-<component>", e.g. kubenpu-device-plugin. Call with (list $ "component"). */}}
{{- define "kubenpu.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "kubenpu.fullname" $root | trunc 40 | trimSuffix "-") (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubenpu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "kubenpu.labels" -}}
helm.sh/chart: {{ include "kubenpu.chart" . }}
app.kubernetes.io/name: {{ include "kubenpu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubenpu
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component. Call with (list $ "component"). */}}
{{- define "kubenpu.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "kubenpu.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's objects. Call with (list $ "component"). */}}
{{- define "kubenpu.componentLabels" -}}
{{ include "kubenpu.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
Labels on every kubenpu pod: the component's, plus the opt-out label of the admission
webhook, so the webhook never reviews its own pods or the other kubenpu pods.
Call with (list $ "component").
*/}}
{{- define "kubenpu.podLabels" -}}
{{ include "kubenpu.componentLabels" . }}
kubenpu.io/admission: disabled
{{- end -}}

{{/* The kubenpu image, "registry/repository:tag" or "...@digest". */}}
{{- define "kubenpu.image" -}}
{{- $img := .Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The secondary kube-scheduler's image. */}}
{{- define "kubenpu.schedulerImage" -}}
{{- $img := .Values.scheduler.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $img.tag -}}
{{- end -}}
{{- end -}}

{{/* The pods' imagePullSecrets block, or nothing. Entries may be names or {name: ...}. */}}
{{- define "kubenpu.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of a component. Call with (list $ "component" .Values.<component>). */}}
{{- define "kubenpu.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $sa := (index . 2).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "kubenpu.componentName" (list $root (index . 1))) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/*
Container securityContext shared by the extender, the webhook and the secondary scheduler:
non-root, no privilege escalation, read-only root filesystem, every capability dropped.
*/}}
{{- define "kubenpu.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod securityContext of the non-root components. */}}
{{- define "kubenpu.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Service names and URLs. */}}
{{- define "kubenpu.extenderServiceName" -}}
{{- include "kubenpu.componentName" (list . "extender") -}}
{{- end -}}

{{- define "kubenpu.webhookServiceName" -}}
{{- include "kubenpu.componentName" (list . "webhook") -}}
{{- end -}}

{{- define "kubenpu.webhookTLSSecretName" -}}
{{- default (printf "%s-tls" (include "kubenpu.webhookServiceName" .)) .Values.webhook.certificate.secretName -}}
{{- end -}}

{{/*
The extender's URL prefix as kube-scheduler reaches it. A secondary scheduler runs in the
cluster and uses the Service's DNS name, or its fixed cluster IP (extender.service.clusterIP)
where the cluster has no DNS; a platform scheduler on a control-plane host often cannot
resolve cluster DNS, so scheduler.extender.urlPrefix overrides it.
*/}}
{{- define "kubenpu.extenderURLPrefix" -}}
{{- if .Values.scheduler.extender.urlPrefix -}}
{{- .Values.scheduler.extender.urlPrefix -}}
{{- else -}}
{{- $host := printf "%s.%s.svc" (include "kubenpu.extenderServiceName" .) .Release.Namespace -}}
{{- with .Values.extender.service.clusterIP }}{{ $host = . }}{{ end -}}
{{- printf "%s://%s:%v%s" (ternary "https" "http" .Values.extender.tls.enabled) $host .Values.extender.service.port .Values.extender.pathPrefix -}}
{{- end -}}
{{- end -}}

{{/*
Whether the device plugin container runs privileged: the value when set, otherwise by
backend. Every real backend opens the device nodes for its health check, which the
container's device cgroup refuses unless the container is privileged; the mock opens none.
*/}}
{{- define "kubenpu.devicePlugin.privileged" -}}
{{- $dp := .Values.devicePlugin -}}
{{- if kindIs "bool" $dp.privileged -}}
{{- $dp.privileged -}}
{{- else -}}
{{- ne $dp.backend "mock" -}}
{{- end -}}
{{- end -}}
