{{/* Names */}}
{{- define "trainbench.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trainbench.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trainbench.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: app.kubernetes.io/* on every object */}}
{{- define "trainbench.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainbench.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainbench.labels" -}}
helm.sh/chart: {{ include "trainbench.chart" . }}
{{ include "trainbench.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainbench
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images */}}
{{- define "trainbench.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "trainbench.operatorImage" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.operator (include "trainbench.tag" .) -}}
{{- end -}}

{{/* The operator's ServiceAccount name */}}
{{- define "trainbench.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trainbench.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches in namespaced mode: the release namespace first, no duplicates */}}
{{- define "trainbench.watchNamespaces" -}}
{{- $ns := list .Release.Namespace -}}
{{- range .Values.operator.namespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- $ns | uniq | join "," -}}
{{- end -}}

{{/*
A pool as the BenchmarkRun API wants it: the preset from .Values.pools merged with a suite's overrides;
`family` becomes `image`. Call with (dict "root" $ "ref" <string or {name, ...overrides}>).
*/}}
{{- define "trainbench.pool" -}}
{{- $root := .root -}}
{{- $ref := .ref -}}
{{- $name := "" -}}
{{- $over := dict -}}
{{- if kindIs "string" $ref -}}
{{- $name = $ref -}}
{{- else -}}
{{- $name = $ref.name -}}
{{- $over = omit $ref "name" -}}
{{- end -}}
{{- if not (hasKey $root.Values.pools $name) -}}
{{- fail (printf "suite pool %q is not defined in .Values.pools (defined: %s)" $name (keys $root.Values.pools | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $pool := mergeOverwrite (deepCopy (get $root.Values.pools $name)) $over -}}
{{- $_ := set $pool "name" $name -}}
{{- if not $pool.image -}}
{{- $family := required (printf "pool %q needs `image` or `family`" $name) $pool.family -}}
{{- if not (hasKey $root.Values.image.families $family) -}}
{{- fail (printf "pool %q: family %q is not in image.families (%s)" $name $family (keys $root.Values.image.families | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $_ := set $pool "image" (printf "%s/%s:%s" $root.Values.image.registry (get $root.Values.image.families $family) (include "trainbench.tag" $root)) -}}
{{- end -}}
{{- if and $root.Values.compileCache.create $root.Values.compileCache.allPools (not $pool.compileCache) -}}
{{- $_ := set $pool "compileCache" (dict "persistentVolumeClaim" (dict "claimName" (include "trainbench.compileCacheClaim" $root))) -}}
{{- end -}}
{{- toYaml (omit $pool "family") -}}
{{- end -}}

{{/* The PersistentVolumeClaim the chart makes for torch.compile's caches (compileCache.create) */}}
{{- define "trainbench.compileCacheClaim" -}}
{{- default (printf "%s-compile-cache" (include "trainbench.fullname" .)) .Values.compileCache.name -}}
{{- end -}}

{{/* The BenchmarkRun template of one suite. Call with (dict "root" $ "name" <suite> "suite" <values>) */}}
{{- define "trainbench.suiteRun" -}}
{{- $root := .root -}}
{{- $pools := list -}}
{{- range .suite.pools -}}
{{- $pools = append $pools (include "trainbench.pool" (dict "root" $root "ref" .) | fromYaml) -}}
{{- end -}}
{{- $spec := mergeOverwrite (deepCopy (default dict .suite.spec)) (dict "suite" .name "pools" $pools) -}}
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  labels:
    app.kubernetes.io/name: {{ include "trainbench.name" $root }}
    app.kubernetes.io/instance: {{ $root.Release.Name }}
    app.kubernetes.io/part-of: trainbench
    app.kubernetes.io/component: benchmark-run
    trainbench.dev/suite: {{ .name }}
spec:
{{- toYaml $spec | nindent 2 }}
{{- end -}}

{{/* Annotations the operator puts on trainer pods (JSON): Prometheus scrape hints unless a PodMonitor scrapes them */}}
{{- define "trainbench.trainerPodAnnotations" -}}
{{- if and .Values.metrics.scrapeAnnotations (not (and .Values.prometheusOperator.enabled .Values.prometheusOperator.podMonitor.enabled)) -}}
{{- dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString .Values.metrics.trainerPort) "prometheus.io/path" "/metrics" | toJson -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* What the operator may do in a watched namespace (or cluster-wide). No wildcards. */}}
{{- define "trainbench.operatorRules" -}}
- apiGroups: [trainbench.dev]
  resources: [benchmarkruns]
  verbs: [get, list, watch, patch, update]
- apiGroups: [trainbench.dev]
  resources: [benchmarkruns/status]
  verbs: [get, patch, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [jobset.x-k8s.io]
  resources: [jobsets]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
Alerting rules (Prometheus rule-file `groups:`). The operator's gauges keep every finished run, so each
alert looks only at runs completed within alerts.lookbackHours. tests/chart runs them through
`promtool test rules`.
*/}}
{{- define "trainbench.ruleGroups" -}}
{{- $a := .Values.alerts -}}
{{- $lookback := mul (int $a.lookbackHours) 3600 -}}
groups:
  - name: trainbench.rules
    rules:
      - alert: TrainbenchRegressionDetected
        expr: |
          max by (suite, run, model, type, pool, seq_len, ac, attn, metric) (trainbench_result_regression > 0)
            unless on (suite, run) (time() - trainbench_run_completion_timestamp_seconds >= {{ $lookback }})
        labels:
          severity: {{ $a.severity.regression }}
        annotations:
          summary: "trainbench: {{`{{ $labels.metric }}`}} regressed for {{`{{ $labels.model }}`}} {{`{{ $labels.type }}`}} on {{`{{ $labels.pool }}`}}"
          description: "Run {{`{{ $labels.run }}`}} of suite {{`{{ $labels.suite }}`}}: {{`{{ $labels.metric }}`}} is worse than its baseline by more than the threshold (seq_len {{`{{ $labels.seq_len }}`}}, ac {{`{{ $labels.ac }}`}}, attn {{`{{ $labels.attn }}`}}). See the run's report ConfigMap."
      - alert: TrainbenchCaseFailed
        expr: |
          max by (suite, run, case, model, type, pool, reason) (trainbench_case_failed > 0)
            unless on (suite, run) (time() - trainbench_run_completion_timestamp_seconds >= {{ $lookback }})
        labels:
          severity: {{ $a.severity.failure }}
        annotations:
          summary: "trainbench: case {{`{{ $labels.case }}`}} failed ({{`{{ $labels.reason }}`}})"
          description: "Run {{`{{ $labels.run }}`}} of suite {{`{{ $labels.suite }}`}}: {{`{{ $labels.model }}`}} {{`{{ $labels.type }}`}} on pool {{`{{ $labels.pool }}`}} failed with reason {{`{{ $labels.reason }}`}}. kubectl describe benchmarkrun {{`{{ $labels.run }}`}}"
      - alert: TrainbenchRunFailed
        expr: |
          time() - max by (suite, run) (trainbench_run_completion_timestamp_seconds{phase="Failed"}) < {{ $lookback }}
        labels:
          severity: {{ $a.severity.failure }}
        annotations:
          summary: "trainbench: run {{`{{ $labels.run }}`}} of suite {{`{{ $labels.suite }}`}} failed"
          description: "The BenchmarkRun {{`{{ $labels.run }}`}} finished in phase Failed. kubectl describe benchmarkrun {{`{{ $labels.run }}`}}"
      {{- range $name, $suite := .Values.suites }}
      {{- if or (not (hasKey $suite "enabled")) $suite.enabled }}
      {{- $hours := int (default $a.runMissingAfterHours $suite.runMissingAfterHours) }}
      - alert: TrainbenchRunMissing
        expr: |
          time() - max(trainbench_run_completion_timestamp_seconds{suite="{{ $name }}"}) > {{ mul $hours 3600 }}
        labels:
          severity: {{ $a.severity.missing }}
          suite: {{ $name }}
          missing: stale
        annotations:
          summary: "trainbench: no run of suite {{ $name }} completed in {{ $hours }}h"
          description: "The last run of suite {{ $name }} completed {{`{{ $value | humanizeDuration }}`}} ago. Check the CronJob {{ $name }} and the operator."
      - alert: TrainbenchRunMissing
        expr: |
          absent(trainbench_run_completion_timestamp_seconds{suite="{{ $name }}"})
        for: {{ $hours }}h
        labels:
          severity: {{ $a.severity.missing }}
          suite: {{ $name }}
          missing: never
        annotations:
          summary: "trainbench: suite {{ $name }} has not completed a run"
          description: "The operator exports no completed run of suite {{ $name }} for {{ $hours }}h. Check the CronJob {{ $name }} and the operator."
      {{- end }}
      {{- end }}
{{- end -}}
