{{/*
The KubeSchedulerConfiguration that calls the extender: the secondary scheduler's whole
configuration, or (scheduler.mode=platform) the part to merge into the platform's own.
*/}}
{{- define "kubenpu.schedulerConfig" -}}
{{- $sc := .Values.scheduler -}}
{{- $secondary := eq $sc.mode "secondary" -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
{{- if $secondary }}
leaderElection:
  leaderElect: {{ $sc.leaderElect }}
  resourceName: {{ $sc.schedulerName }}
  resourceNamespace: {{ .Release.Namespace }}
profiles:
  - schedulerName: {{ $sc.schedulerName }}
{{- else }}
profiles:
  - schedulerName: default-scheduler
{{- end }}
extenders:
  - urlPrefix: {{ include "kubenpu.extenderURLPrefix" . | quote }}
    filterVerb: filter
    prioritizeVerb: prioritize
    {{- if $sc.extender.bind }}
    bindVerb: bind
    {{- end }}
    # Device-aware victims (kube-scheduler's own preemption only counts resources).
    preemptVerb: preempt
    weight: {{ $sc.extender.weight }}
    enableHTTPS: {{ .Values.extender.tls.enabled }}
    {{- if .Values.extender.tls.enabled }}
    tlsConfig:
      {{- if .Values.extender.tls.caData }}
      caData: {{ .Values.extender.tls.caData }}
      {{- else }}
      insecure: {{ .Values.extender.tls.insecure }}
      {{- end }}
    {{- end }}
    httpTimeout: {{ $sc.extender.httpTimeout }}
    # Only node names travel: the extender keeps its own watch-fed node cache.
    nodeCacheCapable: true
    ignorable: {{ $sc.extender.ignorable }}
    {{- if not $sc.extender.allPods }}
    # Pods asking for none of these never reach the extender. Not ignoredByScheduler:
    # kube-scheduler's own fit still counts them per node (kubenpu.extender.config).
    managedResources:
      - name: aliyun.com/npu
        ignoredByScheduler: false
      - name: aliyun.com/npu-core
        ignoredByScheduler: false
      - name: aliyun.com/npu-mem
        ignoredByScheduler: false
    {{- end }}
{{- end -}}
