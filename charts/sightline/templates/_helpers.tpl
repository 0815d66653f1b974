{{/* Names and labels shared by every template. */}}

{{- define "sightline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sightline.fullname" -}}
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

{{/* Name of one component's objects: (list $ "gateway") */}}
{{- define "sightline.componentName" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "sightline.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sightline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (list $ "gateway") */}}
{{- define "sightline.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "sightline.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component: (list $ "gateway") */}}
{{- define "sightline.labels" -}}
{{- $ctx := index . 0 -}}
{{ include "sightline.selectorLabels" . }}
helm.sh/chart: {{ include "sightline.chart" $ctx }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: sightline
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ServiceAccount of one component: (list $ "gateway"). One per component when
     serviceAccount.create, else the shared existing serviceAccount.name. */}}
{{/* Pod template labels: the component's labels, plus podLabels that do not replace them:
     (list $ "gateway" $podLabels) */}}
{{- define "sightline.podLabels" -}}
{{- $ctx := index . 0 -}}
{{- toYaml (merge (fromYaml (include "sightline.labels" (list $ctx (index . 1)))) (default dict (index . 2)) (default dict $ctx.Values.defaults.podLabels)) -}}
{{- end -}}

{{- define "sightline.serviceAccountName" -}}
{{- $ctx := index . 0 -}}
{{- if $ctx.Values.serviceAccount.create -}}
{{- include "sightline.componentName" . -}}
{{- else -}}
{{- default "default" $ctx.Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference: (list $ .image) */}}
{{- define "sightline.image" -}}
{{- $ctx := index . 0 -}}
{{- $image := index . 1 -}}
{{- $tag := default (default $ctx.Chart.AppVersion $ctx.Values.global.imageTag) $image.tag -}}
{{- $repo := $image.repository -}}
{{- if $ctx.Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $ctx.Values.global.imageRegistry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- with $image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The models served, as a JSON list: routing.models, else [triton.modelName]. Triton loads
     each of them; preprocess (one KServe model each) and explain serve the same list. */}}
{{- define "sightline.servedModels" -}}
{{- .Values.routing.models | default (list .Values.triton.modelName) | toJson -}}
{{- end -}}

{{/* The InferenceService's name, release-scoped. KServe passes it to the transformer as
     --model_name; preprocess ignores its argv and serves every model of
     SIGHTLINE_PREPROCESS_MODELS (sightline.servedModels) instead. */}}
{{- define "sightline.isvcName" -}}
{{- include "sightline.componentName" (list . .Values.triton.modelName) -}}
{{- end -}}

{{/* host:port of Triton's gRPC. KServe's predictor Service maps port 80 to the first container
     port, which is Triton's gRPC port (h2c) in templates/inferenceservice.yaml. */}}
{{- define "sightline.tritonGrpc" -}}
{{- if .Values.kserve.enabled -}}
{{- printf "%s-predictor:80" (include "sightline.isvcName" .) -}}
{{- else -}}
{{- printf "%s:8001" (include "sightline.componentName" (list . "triton")) -}}
{{- end -}}
{{- end -}}

{{- define "sightline.preprocessUrl" -}}
{{- if .Values.kserve.enabled -}}
{{- printf "http://%s-transformer" (include "sightline.isvcName" .) -}}
{{- else -}}
{{- printf "http://%s:%v" (include "sightline.componentName" (list . "preprocess")) .Values.components.preprocess.port -}}
{{- end -}}
{{- end -}}

{{- define "sightline.preprocessGrpc" -}}
{{- if .Values.kserve.enabled -}}
{{- printf "%s-transformer:%v" (include "sightline.isvcName" .) .Values.components.preprocess.grpcPort -}}
{{- else -}}
{{- printf "%s:%v" (include "sightline.componentName" (list . "preprocess")) .Values.components.preprocess.grpcPort -}}
{{- end -}}
{{- end -}}

{{/* KubeRay names the Serve Service <rayservice>-serve-svc. */}}
{{- define "sightline.explainUrl" -}}
{{- if .Values.rayService.enabled -}}
{{- printf "http://%s-serve-svc:%v" (include "sightline.componentName" (list . "explain")) .Values.components.explain.port -}}
{{- else -}}
{{- printf "http://%s:%v" (include "sightline.componentName" (list . "explain")) .Values.components.explain.port -}}
{{- end -}}
{{- end -}}

{{- define "sightline.databaseSecret" -}}
{{- .Values.database.existingSecret -}}
{{- end -}}

{{- define "sightline.objectStorageSecret" -}}
{{- .Values.objectStorage.existingSecret -}}
{{- end -}}

{{- define "sightline.objectStorageEndpoint" -}}
{{- if .Values.objectStorage.inChart.enabled -}}{{ include "sightline.componentName" (list . "minio") }}:9000{{- else -}}{{ .Values.objectStorage.endpoint }}{{- end -}}
{{- end -}}

{{- define "sightline.objectStorageSecure" -}}
{{- if .Values.objectStorage.inChart.enabled -}}false{{- else -}}{{ .Values.objectStorage.secure }}{{- end -}}
{{- end -}}

{{- define "sightline.otelEndpoint" -}}
{{- if .Values.otel.inChart.enabled -}}http://{{ include "sightline.componentName" (list . "otel-collector") }}:4317{{- else -}}{{ .Values.otel.endpoint }}{{- end -}}
{{- end -}}

{{/* Environment every first-party service gets: (list $ "gateway" $component) */}}
{{- define "sightline.serviceEnv" -}}
{{- $ctx := index . 0 -}}
{{- $name := index . 1 -}}
{{- $c := index . 2 -}}
{{- $prefix := printf "SIGHTLINE_%s_" (upper $name) -}}
- {name: {{ $prefix }}HOST, value: "0.0.0.0"}
- {name: {{ $prefix }}PORT, value: {{ $c.port | quote }}}
{{- if $c.grpcPort }}
- {name: {{ $prefix }}GRPC_PORT, value: {{ $c.grpcPort | quote }}}
{{- end }}
{{- if $c.dicomPort }}
- {name: {{ $prefix }}DICOM_PORT, value: {{ $c.dicomPort | quote }}}
{{- end }}
{{- with $c.spool }}
- {name: {{ $prefix }}SPOOL_DIR, value: {{ .mountPath | quote }}}
- {name: {{ $prefix }}SPOOL_KEY_FILE, value: "/etc/sightline/spool-key/spool.key"}
{{- end }}
- {name: {{ $prefix }}ENVIRONMENT, value: {{ $ctx.Values.global.environment | quote }}}
- {name: {{ $prefix }}LOG_LEVEL, value: {{ $ctx.Values.global.logLevel | quote }}}
- {name: {{ $prefix }}LOG_JSON, value: "true"}
- {name: SIGHTLINE_OTEL_EXPORTER, value: {{ $ctx.Values.otel.exporter | quote }}}
- {name: SIGHTLINE_OTEL_OTLP_ENDPOINT, value: {{ include "sightline.otelEndpoint" $ctx | quote }}}
{{- if has "database" $c.uses }}
- name: {{ $prefix }}DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "sightline.databaseSecret" $ctx }}, key: {{ $ctx.Values.database.urlKey }}}}
{{- end }}
{{- if eq $name "gateway" }}
{{- /* The hook Job migrates (files/migrate.py); the gateway then only checks the schema's revision. */}}
- {name: {{ $prefix }}MIGRATE_ON_START, value: {{ not (and $ctx.Values.migrations.enabled (not $ctx.Values.database.inChart.enabled)) | quote }}}
- {name: {{ $prefix }}RATE_LIMIT_PER_MINUTE, value: {{ $ctx.Values.rateLimit.perMinute | quote }}}
- {name: {{ $prefix }}RATE_LIMIT_BURST, value: {{ $ctx.Values.rateLimit.burst | quote }}}
{{- with $ctx.Values.rateLimit.redis.existingSecret }}
- name: {{ $prefix }}RATE_LIMIT_STORAGE
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $ctx.Values.rateLimit.redis.urlKey }}}}
{{- end }}
{{- with $ctx.Values.pacsForwarding.destinations }}
{{- /* The way back: destinations per tenant, the tenant keys mounted from their Secret. */}}
- {name: {{ $prefix }}PACS_DESTINATIONS, value: {{ toJson . | quote }}}
- {name: {{ $prefix }}REIDENTIFICATION_KEYS_FILE, value: "/etc/sightline/tenant-keys/tenant-keys.json"}
- {name: {{ $prefix }}DELIVERY_RETRY_BUDGET_S, value: {{ $ctx.Values.pacsForwarding.retryBudgetSeconds | quote }}}
{{- end }}
{{- end }}
{{- if has "objectStorage" $c.uses }}
- {name: {{ $prefix }}S3_ENDPOINT, value: {{ include "sightline.objectStorageEndpoint" $ctx | quote }}}
- {name: {{ $prefix }}S3_SECURE, value: {{ include "sightline.objectStorageSecure" $ctx | quote }}}
- {name: {{ $prefix }}S3_BUCKET, value: {{ $ctx.Values.objectStorage.bucket | quote }}}
- name: {{ $prefix }}S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "sightline.objectStorageSecret" $ctx }}, key: {{ $ctx.Values.objectStorage.accessKeyKey }}}}
- name: {{ $prefix }}S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "sightline.objectStorageSecret" $ctx }}, key: {{ $ctx.Values.objectStorage.secretKeyKey }}}}
{{- end }}
{{- range $k, $v := $c.env }}
- {name: {{ $k }}, value: {{ tpl (toString $v) $ctx | quote }}}
{{- end }}
{{- range $k, $v := $c.secretEnv }}
- name: {{ $k }}
  valueFrom: {secretKeyRef: {name: {{ tpl $v.secretName $ctx }}, key: {{ $v.key }}}}
{{- end }}
{{- end -}}

{{/* Triton's command line, shared by the Deployment and the KServe predictor. */}}
{{- define "sightline.tritonArgs" -}}
{{- $t := .Values.triton -}}
{{- if eq $t.modelRepository.source "objectStorage" }}
{{- /* Triton's S3 client uses plain HTTP for s3://host:port/...; TLS needs s3://https://host:port/... */}}
- --model-repository=s3://{{ if eq (include "sightline.objectStorageSecure" .) "true" }}https://{{ end }}{{ include "sightline.objectStorageEndpoint" . }}/{{ .Values.objectStorage.bucket }}/{{ $t.modelRepository.objectStoragePath }}
{{- else }}
- --model-repository=/models
{{- end }}
- --model-control-mode=explicit
{{- range (include "sightline.servedModels" . | fromJsonArray) }}
- --load-model={{ . }}
{{- end }}
- --strict-readiness=true
- --exit-on-error=true
- --http-port=8000
- --grpc-port=8001
- --metrics-port=8002
- --allow-metrics=true
{{- if $t.modelConfigName }}
- --model-config-name={{ $t.modelConfigName }}
{{- end }}
{{- if $t.tracing.enabled }}
- --trace-config=mode=opentelemetry
- --trace-config=opentelemetry,url={{ $t.tracing.otlpHttpUrl }}
- --trace-config=opentelemetry,resource=service.name=triton
- --trace-config=rate={{ $t.tracing.rate }}
- --trace-config=level=TIMESTAMPS
{{- end }}
{{- range $t.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Credentials Triton needs for an s3:// model repository: its own read-only keys, or none
     (workload identity through triton.serviceAccount.annotations, which the AWS SDK picks up). */}}
{{- define "sightline.tritonEnv" -}}
{{- if eq .Values.triton.modelRepository.source "objectStorage" }}
{{- $cred := .Values.triton.modelRepository.credentials }}
{{- with .Values.objectStorage.region }}
- {name: AWS_DEFAULT_REGION, value: {{ . | quote }}}
- {name: AWS_REGION, value: {{ . | quote }}}
{{- end }}
{{- if $cred.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $cred.existingSecret }}, key: {{ $cred.accessKeyKey }}}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $cred.existingSecret }}, key: {{ $cred.secretKeyKey }}}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Size of Triton's /tmp: an s3:// repository is copied there before loading. */}}
{{- define "sightline.tritonTmpSize" -}}
{{- if eq .Values.triton.modelRepository.source "objectStorage" -}}
{{- .Values.triton.modelRepository.downloadSizeLimit -}}
{{- else -}}
{{- .Values.defaults.tmpSizeLimit -}}
{{- end -}}
{{- end -}}

{{- define "sightline.tritonResources" -}}
{{- $r := deepCopy .Values.triton.resources -}}
{{- if .Values.triton.gpu.enabled -}}
{{- $limits := default dict $r.limits -}}
{{- $_ := set $limits .Values.triton.gpu.resourceName .Values.triton.gpu.count -}}
{{- $_ := set $r "limits" $limits -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* Triton's TensorRT engine/timing cache volume (config.pbtxt: /var/cache/triton/trt). */}}
{{- define "sightline.tritonEngineCacheVolume" -}}
{{- $c := .Values.triton.engineCache -}}
- name: engine-cache
{{- if $c.existingClaim }}
  persistentVolumeClaim: {claimName: {{ $c.existingClaim }}}
{{- else }}
  emptyDir: {sizeLimit: {{ $c.sizeLimit }}}
{{- end }}
{{- end }}

{{/* lifecycle.versions as the gateway's model_versions JSON (snake_case keys); a shadow or a
     canary share without a candidate is refused here, as the gateway would at start. */}}
{{- define "sightline.modelVersions" -}}
{{- $out := dict -}}
{{- range $tenant, $models := .Values.lifecycle.versions -}}
{{- $m := dict -}}
{{- range $model, $p := $models -}}
{{- $e := dict "shadow" (default false $p.shadow) "canary_share" (default 0 $p.canaryShare) -}}
{{- if $p.serving }}{{ $_ := set $e "serving" (int $p.serving) }}{{ end -}}
{{- if $p.candidate }}{{ $_ := set $e "candidate" (int $p.candidate) }}{{ end -}}
{{- if and (or $e.shadow $e.canary_share) (not $p.candidate) -}}
{{- fail (printf "lifecycle.versions.%s.%s: shadow and canaryShare need a candidate version" $tenant $model) -}}
{{- end -}}
{{- $_ := set $m $model $e -}}
{{- end -}}
{{- $_ := set $out $tenant $m -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{- define "sightline.lifecycleGates" -}}
{{- $g := .Values.lifecycle.gates -}}
{{- dict "ece_max" $g.eceMax "out_of_scope_tolerance" $g.outOfScopeTolerance "shadow_disagreement_max" $g.shadowDisagreementMax "shadow_min_studies" (int $g.shadowMinStudies) "shadow_window_days" $g.shadowWindowDays | toJson -}}
{{- end -}}
