{{/*
CEL: true when a container or init container requests or limits an NPU resource. The
API server evaluates it before calling the webhook, so pods that ask for no NPU are never
sent (and never held up by an unavailable webhook). Same expression as
kubenpu.webhook.registration.
*/}}
{{- define "kubenpu.webhook.asksForNPU" -}}
{{- $keys := list -}}
{{- range (list "aliyun.com/npu" "aliyun.com/npu-core" "aliyun.com/npu-mem") -}}
{{- $keys = append $keys (printf "'%s'" .) -}}
{{- end -}}
{{- $in := printf "k in [%s]" (join ", " $keys) -}}
{{- $per := printf "has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, %s)) || (has(c.resources.requests) && c.resources.requests.exists(k, %s)))" $in $in -}}
{{- printf "object.spec.containers.exists(c, %s) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, %s))" $per $per -}}
{{- end -}}

{{/*
The part of one webhook entry shared by the validating and the mutating configuration.
Call with (dict "root" $ "path" "/validate" "failurePolicy" "Fail" "caBundle" "...").
*/}}
{{- define "kubenpu.webhook.entry" -}}
{{- $root := .root -}}
{{- $wh := $root.Values.webhook -}}
admissionReviewVersions: [v1]
clientConfig:
  service:
    name: {{ include "kubenpu.webhookServiceName" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- with .caBundle }}
  caBundle: {{ . }}
  {{- end }}
rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
    scope: Namespaced
{{- if $wh.npuPodsOnly }}
matchConditions:
  - name: asks-for-npu
    expression: {{ include "kubenpu.webhook.asksForNPU" $root | quote }}
{{- end }}
namespaceSelector:
  matchExpressions:
    - key: kubenpu.io/admission
      operator: NotIn
      values: [disabled]
    {{- with $wh.excludeNamespaces }}
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml . | nindent 8 }}
    {{- end }}
objectSelector:
  matchExpressions:
    - key: kubenpu.io/admission
      operator: NotIn
      values: [disabled]
failurePolicy: {{ .failurePolicy }}
matchPolicy: Equivalent
sideEffects: None
timeoutSeconds: {{ $wh.timeoutSeconds }}
{{- end -}}
