{{/* The app.kubernetes.io/name label: "tessellate" unless nameOverride. */}}
{{- define "tessellate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: the release name, with "-tessellate" appended unless it
already contains it. A release named "tessellate" gives the kustomize base's names.
Kept short enough for "<prefix>-scheduler-leader-election" and friends.
*/}}
{{- define "tessellate.fullname" -}}
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

{{- define "tessellate.scheduler.fullname" -}}{{ include "tessellate.fullname" . }}-scheduler{{- end -}}
{{- define "tessellate.agent.fullname" -}}{{ include "tessellate.fullname" . }}-agent{{- end -}}
{{- define "tessellate.agent.serviceAccountName" -}}
{{- default (include "tessellate.agent.fullname" .) .Values.agent.serviceAccountName -}}
{{- end -}}
{{- define "tessellate.scheduler.configName" -}}{{ include "tessellate.scheduler.fullname" . }}-config{{- end -}}

{{/* Where the agent lives: agent.namespace, else the release namespace. */}}
{{- define "tessellate.agent.namespace" -}}
{{- default .Release.Namespace .Values.agent.namespace -}}
{{- end -}}

{{/* The users the admission policies single out. */}}
{{- define "tessellate.scheduler.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "tessellate.scheduler.fullname" . }}
{{- end -}}
{{- define "tessellate.agent.username" -}}
system:serviceaccount:{{ include "tessellate.agent.namespace" . }}:{{ include "tessellate.agent.serviceAccountName" . }}
{{- end -}}

{{- define "tessellate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Labels on every object; call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "tessellate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tessellate.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tessellate
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* What the Deployment, DaemonSet, Service and anti-affinity select on. */}}
{{- define "tessellate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessellate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
The scheduler's config.yaml as a dict: scheduler.config, plus what the chart owns (the
scheduler name, policy, port and leader election, which must match the Deployment, the
Service and the Role). Checks that the values agree with each other; every failure says
which value to change.
*/}}
{{- define "tessellate.scheduler.config" -}}
{{- $v := .Values.scheduler -}}
{{- $config := deepCopy ($v.config | default dict) -}}
{{- range $key, $instead := dict "schedulerName" "scheduler.schedulerName" "policy" "scheduler.policy" "bindAddress" "scheduler.port" "leaderElection" "scheduler.leaderElection" }}
{{- if hasKey $config $key }}
{{- fail (printf "scheduler.config.%s: set %s instead (the chart writes %s into config.yaml itself)" $key $instead $key) }}
{{- end }}
{{- end }}
{{- if and (gt (int $v.replicas) 1) (not $v.leaderElection.enabled) }}
{{- fail (printf "scheduler.replicas is %d but scheduler.leaderElection.enabled is false: more than one replica needs leader election (or they would all schedule)" (int $v.replicas)) }}
{{- end }}
{{- $_ := set $config "schedulerName" $v.schedulerName -}}
{{- $_ := set $config "policy" $v.policy -}}
{{- $_ := set $config "bindAddress" (printf "0.0.0.0:%d" (int $v.port)) -}}
{{- $le := dict "leaderElect" $v.leaderElection.enabled "leaseDuration" $v.leaderElection.leaseDuration "renewDeadline" $v.leaderElection.renewDeadline "retryPeriod" $v.leaderElection.retryPeriod "resourceNamespace" .Release.Namespace "resourceName" (include "tessellate.scheduler.fullname" .) -}}
{{- $_ := set $config "leaderElection" $le -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Cross-value checks that no one template owns. */}}
{{- define "tessellate.validate" -}}
{{- if and .Values.migDynamic.enabled .Values.agent.enabled (ne .Values.agent.mode "full") }}
{{- fail (printf "migDynamic.enabled needs agent.mode=full (the agent creates MIG instances only in full mode); agent.mode is %q" .Values.agent.mode) }}
{{- end }}
{{- if and .Values.agent.createNamespace (or (not .Values.agent.namespace) (eq .Values.agent.namespace .Release.Namespace)) }}
{{- fail "agent.createNamespace needs agent.namespace set to a namespace other than the release's (Helm does not create the release namespace: use helm install --create-namespace)" }}
{{- end }}
{{- end -}}
