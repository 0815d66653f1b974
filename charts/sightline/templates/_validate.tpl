{{/* Render-time checks the schema cannot express (cross-field rules). Each `fail` names the key
     to change, so a bad value stops `helm template`/`helm install` instead of breaking at apply
     time or in a crash loop. Included once, from templates/preflight.yaml. */}}

{{/* CPU quantity in millicores (schema pattern: 500m, 1, 0.5). */}}
{{- define "sightline.cpuMilli" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}{{ trimSuffix "m" $q | float64 }}{{- else -}}{{ mulf (float64 $q) 1000 }}{{- end -}}
{{- end -}}

{{/* Byte quantity in bytes (schema pattern: 512Mi, 1G, 1000). */}}
{{- define "sightline.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- $unit := regexFind "[A-Za-z]+$" $q -}}
{{- mulf (float64 (trimSuffix $unit $q)) (default 1.0 (get $units $unit)) -}}
{{- end -}}

{{/* requests <= limits for cpu and memory: (list "key.path" $resources) */}}
{{- define "sightline.checkResources" -}}
{{- $key := index . 0 -}}
{{- $r := index . 1 | default dict -}}
{{- $req := $r.requests | default dict -}}
{{- $lim := $r.limits | default dict -}}
{{- if and (hasKey $req "cpu") (hasKey $lim "cpu") (gt (float64 (include "sightline.cpuMilli" $req.cpu)) (float64 (include "sightline.cpuMilli" $lim.cpu))) -}}
{{- fail (printf "%s: requests.cpu (%v) is above limits.cpu (%v); Kubernetes refuses the pod" $key $req.cpu $lim.cpu) -}}
{{- end -}}
{{- if and (hasKey $req "memory") (hasKey $lim "memory") (gt (float64 (include "sightline.bytes" $req.memory)) (float64 (include "sightline.bytes" $lim.memory))) -}}
{{- fail (printf "%s: requests.memory (%v) is above limits.memory (%v); Kubernetes refuses the pod" $key $req.memory $lim.memory) -}}
{{- end -}}
{{- end -}}

{{/* minReplicas <= maxReplicas: (list "key.path" $min $max) */}}
{{- define "sightline.checkRange" -}}
{{- if gt (int (index . 1)) (int (index . 2)) -}}
{{- fail (printf "%s: minReplicas (%v) is above maxReplicas (%v)" (index . 0) (index . 1) (index . 2)) -}}
{{- end -}}
{{- end -}}

{{- define "sightline.validate" -}}
{{- $v := .Values -}}
{{- /* Longest suffix the chart appends: "-default-deny-kserve" (20); KubeRay adds "-serve-svc". */ -}}
{{- $full := include "sightline.fullname" . -}}
{{- if gt (len $full) 43 -}}
{{- fail (printf "release name %q gives object names prefix %q (%d characters, at most 43): names are cut at 63 and would collide; use a shorter release name or set fullnameOverride" .Release.Name $full (len $full)) -}}
{{- end -}}
{{- $gateway := $v.components.gateway -}}
{{- if and $gateway.enabled (eq $v.global.environment "production") -}}
{{- if not $v.auth.jwksUrl -}}
{{- fail "auth.jwksUrl is required in production: the gateway refuses to start without the OpenID Connect provider's JWKS (e.g. --set auth.jwksUrl=https://<idp>/.well-known/jwks.json)" -}}
{{- end -}}
{{- if not $v.auth.issuer -}}
{{- fail "auth.issuer is required in production: the gateway checks every token's issuer (e.g. --set auth.issuer=https://<idp>/)" -}}
{{- end -}}
{{- end -}}
{{- include "sightline.checkResources" (list "defaults.resources" $v.defaults.resources) -}}
{{- include "sightline.checkResources" (list "triton.resources" $v.triton.resources) -}}
{{- include "sightline.checkResources" (list "rayService.head.resources" $v.rayService.head.resources) -}}
{{- include "sightline.checkResources" (list "rayService.workers.resources" $v.rayService.workers.resources) -}}
{{- $enabled := dict "triton" $v.triton.enabled -}}
{{- range $name, $c := $v.components }}{{- $_ := set $enabled $name $c.enabled }}{{- end -}}
{{- range $name, $c := $v.components -}}
{{- if $c.enabled -}}
{{- with $c.resources }}{{- include "sightline.checkResources" (list (printf "components.%s.resources" $name) .) }}{{- end -}}
{{- with $c.autoscaling }}{{- if .enabled }}{{- include "sightline.checkRange" (list (printf "components.%s.autoscaling" $name) .minReplicas .maxReplicas) }}{{- end }}{{- end -}}
{{- range $target := $c.uses -}}
{{- if and (hasKey $enabled $target) (not (index $enabled $target)) -}}
{{- fail (printf "%s: components.%s uses %s, which is disabled; enable it or remove it from components.%s.uses" (ternary "triton.enabled" (printf "components.%s.enabled" $target) (eq $target "triton")) $name $target $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $receiver := default dict $v.components.receiver -}}
{{- if and $receiver.enabled (dig "spool" "persistence" "enabled" false $receiver) -}}
{{- if or (ne (int (default $v.defaults.replicas $receiver.replicas)) 1) (dig "autoscaling" "enabled" false $receiver) -}}
{{- fail "components.receiver.spool.persistence.enabled: one receiver per spool claim; set components.receiver.replicas=1 and leave its autoscaling off (or keep persistence off: each pod then spools to its own emptyDir)" -}}
{{- end -}}
{{- end -}}
{{- if $v.ingress.enabled -}}
{{- range $h := $v.ingress.hosts }}{{- range $p := $h.paths }}
{{- $path := trimSuffix "/" $p.path -}}
{{- if or (eq $p.path "/metrics") (and (eq $p.pathType "Prefix") (hasPrefix (printf "%s/" $path) "/metrics/")) (and (eq $p.pathType "ImplementationSpecific") (hasPrefix $path "/metrics")) -}}
{{- fail (printf "ingress.hosts[%s].paths: %q (%s) would publish the gateway's /metrics; list the API prefixes (/v1, /dicomweb) instead" $h.host $p.path $p.pathType) -}}
{{- end -}}
{{- end }}{{- end }}
{{- end -}}
{{- $t := $v.triton -}}
{{- if and (eq $t.strategy.type "Recreate") $t.strategy.rollingUpdate -}}
{{- fail "triton.strategy.rollingUpdate must be unset when triton.strategy.type is Recreate" -}}
{{- end -}}
{{- if $t.autoscaling.enabled }}{{- include "sightline.checkRange" (list "triton.autoscaling" $t.autoscaling.minReplicas $t.autoscaling.maxReplicas) }}{{- end -}}
{{- if $v.kserve.enabled -}}
{{- include "sightline.checkRange" (list "kserve.minReplicas/maxReplicas" $v.kserve.minReplicas $v.kserve.maxReplicas) -}}
{{- $isvc := include "sightline.isvcName" . -}}
{{- if gt (len $isvc) 51 -}}
{{- fail (printf "triton.modelName: InferenceService name %q is too long for KServe's <name>-transformer Service (63 characters); shorten the release name or the model name" $isvc) -}}
{{- end -}}
{{- if eq $t.modelRepository.source "volume" -}}
{{- fail "triton.modelRepository.source=volume is not supported with kserve.enabled (the InferenceService would drop the PVC): use image or objectStorage" -}}
{{- end -}}
{{- end -}}
{{- if $v.rayService.enabled -}}
{{- /* KubeRay refuses longer RayService names (MaxRayServiceNameLength: 53 - 6). */ -}}
{{- $ray := include "sightline.componentName" (list . "explain") -}}
{{- if gt (len $ray) 47 -}}
{{- fail (printf "rayService.enabled: RayService name %q is %d characters, KubeRay accepts at most 47; use a shorter release name or fullnameOverride" $ray (len $ray)) -}}
{{- end -}}
{{- $w := $v.rayService.workers -}}
{{- include "sightline.checkRange" (list "rayService.workers" $w.minReplicas $w.maxReplicas) -}}
{{- if or (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) -}}
{{- fail (printf "rayService.workers.replicas (%v) must lie between minReplicas (%v) and maxReplicas (%v)" $w.replicas $w.minReplicas $w.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- if and $t.enabled (not $t.gpu.enabled) (ne $t.modelConfigName "local") -}}
{{- fail "triton.modelConfigName must be \"local\" when triton.gpu.enabled=false: config.pbtxt runs ONNX Runtime on a GPU (KIND_GPU) and Triton would fail to load the model" -}}
{{- end -}}
{{- if and $t.enabled (eq $t.modelRepository.source "volume") (not $t.modelRepository.volume.claimName) -}}
{{- fail "triton.modelRepository.volume.claimName is required when triton.modelRepository.source is volume" -}}
{{- end -}}
{{- end -}}

{{/* Every Secret key a pod of this release reads without `optional`: one "name key what" line each. */}}
{{- define "sightline.requiredSecrets" -}}
{{- $v := .Values -}}
{{- $usesS3 := $v.objectStorage.inChart.enabled -}}
{{- $usesDb := $v.database.inChart.enabled -}}
{{- range $name, $c := $v.components }}{{- if $c.enabled }}
{{- if has "objectStorage" $c.uses }}{{- $usesS3 = true }}{{- end }}
{{- if has "database" $c.uses }}{{- $usesDb = true }}{{- end }}
{{- range $env, $ref := $c.secretEnv }}
{{ tpl $ref.secretName $ }} {{ $ref.key }} components.{{ $name }}.secretEnv.{{ $env }}
{{- end }}
{{- with $c.spool }}
{{ tpl .keySecret.secretName $ }} {{ .keySecret.key }} components.{{ $name }}.spool.keySecret
{{- end }}
{{- end }}{{- end }}
{{- if $usesDb }}
{{ $v.database.existingSecret }} {{ $v.database.urlKey }} database.existingSecret/urlKey
{{- if $v.database.inChart.enabled }}
{{ $v.database.existingSecret }} {{ $v.database.inChart.passwordKey }} database.inChart.passwordKey
{{- end }}
{{- end }}
{{- if and $v.components.gateway.enabled $v.rateLimit.redis.existingSecret }}
{{ $v.rateLimit.redis.existingSecret }} {{ $v.rateLimit.redis.urlKey }} rateLimit.redis.existingSecret/urlKey
{{- end }}
{{- $cred := $v.triton.modelRepository.credentials -}}
{{- if and $v.triton.enabled (eq $v.triton.modelRepository.source "objectStorage") $cred.existingSecret }}
{{ $cred.existingSecret }} {{ $cred.accessKeyKey }} triton.modelRepository.credentials
{{ $cred.existingSecret }} {{ $cred.secretKeyKey }} triton.modelRepository.credentials
{{- end }}
{{- if $usesS3 }}
{{ $v.objectStorage.existingSecret }} {{ $v.objectStorage.accessKeyKey }} objectStorage.accessKeyKey
{{ $v.objectStorage.existingSecret }} {{ $v.objectStorage.secretKeyKey }} objectStorage.secretKeyKey
{{- end }}
{{- end -}}

{{/* With a reachable cluster (helm install/upgrade), refuse to install when a Secret or key the
     pods read is missing, instead of pods stuck in CreateContainerConfigError. `lookup` returns
     nothing under `helm template` and client dry-runs, so the check is skipped there; it is also
     skipped while the namespace does not exist yet (--create-namespace). */}}
{{- define "sightline.preflightSecrets" -}}
{{- if and .Values.preflight.checkSecrets (lookup "v1" "Namespace" "" .Release.Namespace) -}}
{{- range $line := splitList "\n" (include "sightline.requiredSecrets" .) -}}
{{- $f := splitList " " (trim $line) -}}
{{- if eq (len $f) 3 -}}
{{- $secret := lookup "v1" "Secret" $.Release.Namespace (index $f 0) -}}
{{- if not $secret -}}
{{- fail (printf "preflight: Secret %q (for %s) does not exist in namespace %q; create it first (or set preflight.checkSecrets=false)" (index $f 0) (index $f 2) $.Release.Namespace) -}}
{{- end -}}
{{- if not (hasKey (default dict $secret.data) (index $f 1)) -}}
{{- fail (printf "preflight: Secret %q has no key %q (for %s)" (index $f 0) (index $f 1) (index $f 2)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
