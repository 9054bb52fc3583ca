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

{{/*
An image reference. Call with (dict "root" $ "image" <string or {name, tag, digest, registry}> "digest" <string>).
A string is `name` (<image.registry>/name:<image.tag or appVersion>), `name:tag`, `name@sha256:...`, or a full
reference whose first segment is a registry host (has a "." or ":", or is localhost), used as it is. A digest
(`sha256:...`) is appended after the tag: the kubelet pulls by digest, the tag stays for humans.
*/}}
{{- define "trainbench.image" -}}
{{- $root := .root -}}
{{- $img := .image -}}
{{- $registry := $root.Values.image.registry -}}
{{- $name := "" -}}
{{- $tag := "" -}}
{{- $digest := default "" .digest -}}
{{- if kindIs "map" $img -}}
{{- $name = required "an image needs `name`" $img.name -}}
{{- $tag = default "" $img.tag -}}
{{- $digest = default $digest $img.digest -}}
{{- $registry = default $registry $img.registry -}}
{{- else -}}
{{- $name = $img -}}
{{- end -}}
{{- if contains "@" $name -}}
{{- $parts := splitn "@" 2 $name -}}
{{- $name = $parts._0 -}}
{{- $digest = default $parts._1 $digest -}}
{{- end -}}
{{- $last := last (splitList "/" $name) -}}
{{- if contains ":" $last -}}
{{- $tag = default (last (splitList ":" $last)) $tag -}}
{{- $name = trimSuffix (printf ":%s" (last (splitList ":" $last))) $name -}}
{{- end -}}
{{- $first := first (splitList "/" $name) -}}
{{- $qualified := and (contains "/" $name) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $ref := ternary $name (printf "%s/%s" $registry $name) $qualified -}}
{{- $ref = printf "%s:%s" $ref (default (include "trainbench.tag" $root) $tag) -}}
{{- if $digest -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" $digest) -}}
{{- fail (printf "image %s: digest %q is not sha256:<64 hex digits>" $ref $digest) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref $digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "trainbench.operatorImage" -}}
{{- include "trainbench.image" (dict "root" . "image" .Values.image.operator "digest" .Values.image.digest) -}}
{{- end -}}

{{/* The trainer image family of a pool without `family`: by its resourceName (image.familyByResource) */}}
{{- define "trainbench.poolFamily" -}}
{{- $root := .root -}}
{{- $pool := .pool -}}
{{- if $pool.family -}}
{{- $pool.family -}}
{{- else -}}
{{- $res := default "nvidia.com/gpu" $pool.resourceName -}}
{{- $fam := get $root.Values.image.familyByResource $res -}}
{{- if not $fam -}}
{{- fail (printf "pool %q: no `family` or `image`, and resourceName %q is not in image.familyByResource (%s)" .name $res (keys $root.Values.image.familyByResource | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $fam -}}
{{- end -}}
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
{{- $family := include "trainbench.poolFamily" (dict "root" $root "pool" $pool "name" $name) -}}
{{- if not (hasKey $root.Values.image.families $family) -}}
{{- fail (printf "pool %q: family %q is not in image.families (%s)" $name $family (keys $root.Values.image.families | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $_ := set $pool "image" (include "trainbench.image" (dict "root" $root "image" (get $root.Values.image.families $family))) -}}
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

{{/*
Refuse a suite whose models the trainer's registry does not know, with the operator parser's message
(_registry.tpl is generated from trainbench.trainer.specs). A path to a config.json is left to the parser.
Call with (dict "name" <suite> "spec" <suite spec>).
*/}}
{{- define "trainbench.checkModels" -}}
{{- $reg := include "trainbench.registry" . | fromJson -}}
{{- $refs := list -}}
{{- $matrix := default dict .spec.matrix -}}
{{- range $i, $m := default list $matrix.models -}}
{{- $refs = append $refs (list (printf "spec.matrix.models[%d]" $i) $m) -}}
{{- end -}}
{{- range $i, $inc := default list $matrix.include -}}
{{- if and (kindIs "map" $inc) $inc.model -}}
{{- $refs = append $refs (list (printf "spec.matrix.include[%d].model" $i) $inc.model) -}}
{{- end -}}
{{- end -}}
{{- range $refs -}}
{{- $field := index . 0 -}}
{{- $model := toString (index . 1) -}}
{{- $key := last (splitList "/" ($model | trim | lower)) -}}
{{- if and (not (has $key $reg.models)) (not (hasSuffix ".json" $model)) -}}
{{- fail (printf "suite %s: %s" $.name (printf $reg.unknownModel $field (printf "'%s'" $model))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The BenchmarkRun template of one suite. Call with (dict "root" $ "name" <suite> "suite" <values>) */}}
{{- define "trainbench.suiteRun" -}}
{{- $root := .root -}}
{{- include "trainbench.checkModels" (dict "name" .name "spec" (default dict .suite.spec)) -}}
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

{{/* Annotations the operator puts on trainer pods (JSON): trainerPods.annotations, plus Prometheus scrape hints
unless a PodMonitor scrapes them */}}
{{- define "trainbench.trainerPodAnnotations" -}}
{{- $ann := deepCopy .Values.trainerPods.annotations -}}
{{- if and .Values.metrics.scrapeAnnotations (not (and .Values.prometheusOperator.enabled .Values.prometheusOperator.podMonitor.enabled)) -}}
{{- $ann = merge $ann (dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString .Values.metrics.trainerPort) "prometheus.io/path" "/metrics") -}}
{{- end -}}
{{- $ann | toJson -}}
{{- end -}}

{{/* trainerPods as the operator will take them (JSON), imagePullSecrets defaulting to the chart's */}}
{{- define "trainbench.trainerPodDefaults" -}}
{{- $pods := deepCopy .Values.trainerPods -}}
{{- if not $pods.imagePullSecrets -}}
{{- $_ := set $pods "imagePullSecrets" (default list .Values.imagePullSecrets) -}}
{{- end -}}
{{- $out := dict -}}
{{- range $k, $v := $pods -}}
{{- if $v -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
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
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list]
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
{{- with .Values.publish.secretNames }}
# spec.publish.secretRef: only the named git credential Secrets (publish.secretNames), never all Secrets
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson . }}
  verbs: [get]
{{- end }}
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
          max by (suite, run, case, model, type, pool, seq_len, ac, attn) (trainbench_result_regression > 0)
            unless on (suite, run) (time() - trainbench_run_completion_timestamp_seconds >= {{ $lookback }})
        labels:
          severity: {{ $a.severity.regression }}
        annotations:
          summary: "trainbench: {{`{{ $labels.model }}`}} {{`{{ $labels.type }}`}} regressed on {{`{{ $labels.pool }}`}} (case {{`{{ $labels.case }}`}})"
          description: "Run {{`{{ $labels.run }}`}} of suite {{`{{ $labels.suite }}`}}: a confirmed regression against its baseline (seq_len {{`{{ $labels.seq_len }}`}}, ac {{`{{ $labels.ac }}`}}, attn {{`{{ $labels.attn }}`}}); one alert per case, as the report and kubectl get br count them. See the run's report ConfigMap."
      - alert: TrainbenchCaseFailed
        expr: |
          max by (suite, run, case, model, type, pool, reason) (trainbench_case_failed > 0)
            unless on (suite, run) (time() - trainbench_run_completion_timestamp_seconds >= {{ $lookback }})
        labels:
          severity: {{ $a.severity.failure }}
        annotations:
          summary: "trainbench: case {{`{{ $labels.case }}`}} failed ({{`{{ $labels.reason }}`}})"
          description: "Run {{`{{ $labels.run }}`}} of suite {{`{{ $labels.suite }}`}}: {{`{{ $labels.model }}`}} {{`{{ $labels.type }}`}} on pool {{`{{ $labels.pool }}`}} failed with reason {{`{{ $labels.reason }}`}}. kubectl describe benchmarkrun {{`{{ $labels.run }}`}}"
      - alert: TrainbenchChangePoint
        expr: |
          max by (suite, case, model, type, pool, metric, run) (trainbench_change_points_unacknowledged{direction="worse"} > 0)
        labels:
          severity: {{ $a.severity.changePoint | default "warning" }}
        annotations:
          summary: "trainbench: {{`{{ $labels.metric }}`}} of case {{`{{ $labels.case }}`}} changed for the worse (suite {{`{{ $labels.suite }}`}})"
          description: "The history of suite {{`{{ $labels.suite }}`}} has a change point: {{`{{ $labels.metric }}`}} of {{`{{ $labels.model }}`}} {{`{{ $labels.type }}`}} on pool {{`{{ $labels.pool }}`}} got worse from run {{`{{ $labels.run }}`}} on (the report names its commit and image). Once understood: trainbench baseline ack {{`{{ $labels.run }}`}} --suite {{`{{ $labels.suite }}`}} --case {{`{{ $labels.case }}`}} --metric {{`{{ $labels.metric }}`}}"
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
