{{/* Names, labels and the small decisions several templates share. */}}

{{- define "opennebula.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The front-end StatefulSet's name, and the prefix of every other name. At most 52 characters:
the StatefulSet's pods carry the label controller-revision-hash=<name>-<10-character hash>,
and a label value longer than 63 characters keeps the pods from being created. Names that
already fit are unchanged.
*/}}
{{- define "opennebula.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "opennebula.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opennebula.labels" -}}
helm.sh/chart: {{ include "opennebula.chart" . }}
app.kubernetes.io/name: {{ include "opennebula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the OpenNebula front-end pod. */}}
{{- define "opennebula.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opennebula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: frontend
{{- end }}

{{/* Selector of the bundled MariaDB pod. */}}
{{- define "opennebula.mariadb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opennebula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mariadb
{{- end }}

{{- define "opennebula.headlessName" -}}
{{- printf "%s-headless" (include "opennebula.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The bundled MariaDB's StatefulSet and Service: within 52 characters, as above. */}}
{{- define "opennebula.mariadb.fullname" -}}
{{- printf "%s-mariadb" (include "opennebula.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}

{{- define "opennebula.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "opennebula.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "opennebula.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "opennebula.mariadb.image" -}}
{{- $i := .Values.database.mariadb.image }}
{{- if $i.digest }}
{{- printf "%s:%s@%s" $i.repository $i.tag $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}

{{/* Secret with oneadmin's password and one_key (the chart's or the user's). */}}
{{- define "opennebula.secretName" -}}
{{- default (include "opennebula.fullname" .) .Values.opennebula.existingSecret }}
{{- end }}

{{/* Secret and key holding the password onerun uses for the database (none for sqlite). */}}
{{- define "opennebula.dbSecretName" -}}
{{- if eq .Values.database.type "mariadb" }}
{{- default (include "opennebula.mariadb.fullname" .) .Values.database.mariadb.auth.existingSecret }}
{{- else if eq .Values.database.type "external" }}
{{- default (printf "%s-db" (include "opennebula.fullname" . | trunc 60 | trimSuffix "-")) .Values.database.external.existingSecret }}
{{- end }}
{{- end }}

{{- define "opennebula.dbSecretKey" -}}
{{- if eq .Values.database.type "mariadb" }}
{{- .Values.database.mariadb.auth.existingSecretKeys.password }}
{{- else if eq .Values.database.type "external" }}
{{- .Values.database.external.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/*
A secret value that is generated once: the explicit value if given, else the value already in
the live Secret (lookup), else a new random one. Under `helm template` and GitOps tools that
cannot lookup, the last case happens at every render: use existingSecret there.
Arguments: (list $ secretName key explicitValue length).
*/}}
{{- define "opennebula.keptSecretValue" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $key := index . 2 }}
{{- $explicit := index . 3 }}
{{- $length := index . 4 }}
{{- if $explicit }}
{{- $explicit }}
{{- else }}
{{- $live := lookup "v1" "Secret" $root.Release.Namespace $name }}
{{- if and $live $live.data (hasKey $live.data $key) }}
{{- index $live.data $key | b64dec }}
{{- else }}
{{- randAlphaNum $length }}
{{- end }}
{{- end }}
{{- end }}

{{/* Stable DNS name of pod 0 through the headless Service (the default OPENNEBULA_HOSTNAME). */}}
{{- define "opennebula.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "opennebula.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Whether an optional service's port is exposed: listed, or the list is empty (every service the
image installs). OneKS comes in its own package (opennebula-ks) that the image does not
install, so its port is opened only when opennebula.services lists it.
*/}}
{{- define "opennebula.serviceOn" -}}
{{- $services := index . 0 }}
{{- $name := index . 1 }}
{{- if has $name $services }}true
{{- else if and (empty $services) (ne $name "oneks") }}true
{{- end }}
{{- end }}

{{/* Whether the release runs an HA zone (OpenNebula's Raft): more than one front-end pod. */}}
{{- define "opennebula.ha" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* Whether oned's Raft hooks label the leader pod (an HA zone with ha.leaderRouting). */}}
{{- define "opennebula.leaderRouting" -}}
{{- if and (include "opennebula.ha" .) .Values.ha.leaderRouting.enabled }}true{{ end }}
{{- end }}

{{/*
The label oned's Raft hooks set on each member (onerun/ha/label.py, ROLE_LABEL): leader or
follower. The <fullname>-leader Service selects the leader.
*/}}
{{- define "opennebula.raftRoleLabel" -}}
onerun.io/raft-role
{{- end }}

{{/* The Service that reaches the Raft leader; at most 63 characters, a DNS label. */}}
{{- define "opennebula.leaderName" -}}
{{- printf "%s-leader" (include "opennebula.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
ONERUN_HA_MEMBERS: every member's zone-service address, host:port, by its stable name through
the headless Service (the same form as the default OPENNEBULA_HOSTNAME).
*/}}
{{- define "opennebula.haMembers" -}}
{{- $fullname := include "opennebula.fullname" . }}
{{- $domain := include "opennebula.podDomain" . }}
{{- $members := list }}
{{- range $i := until (int .Values.replicaCount) }}
{{- $members = append $members (printf "%s-%d.%s:%d" $fullname $i $domain (int $.Values.ha.zonePort)) }}
{{- end }}
{{- join "," $members }}
{{- end }}

{{/*
HA checks: an odd count (a Raft majority), sqlite only (onerun refuses DB_BACKEND=mysql with
ONERUN_HA_MEMBERS, exit 2, until one database per member is built), one volume per pod.
*/}}
{{- define "opennebula.validateHa" -}}
{{- $n := int .Values.replicaCount }}
{{- if and (gt $n 1) (eq (mod $n 2) 0) }}
{{- fail (printf "replicaCount %d is even: a Raft zone of %d tolerates no more failed members than one of %d, and a split in two halves leaves no majority. Set replicaCount to 3, 5 or 7 for an HA zone, or 1 for a single front-end." $n $n (sub $n 1)) }}
{{- end }}
{{- if gt $n 1 }}
{{- if ne .Values.database.type "sqlite" }}
{{- fail (printf "replicaCount %d (an HA zone) needs database.type sqlite, not %s: onerun refuses DB_BACKEND=mysql with ONERUN_HA_MEMBERS in this release (one database per member on MariaDB is not built yet). Set database.type=sqlite (each pod keeps its database on its own volume), or replicaCount=1." $n .Values.database.type) }}
{{- end }}
{{- if .Values.persistence.existingClaim }}
{{- fail (printf "replicaCount %d (an HA zone) cannot use persistence.existingClaim: every member needs a volume of its own. Unset persistence.existingClaim (the StatefulSet then gives each pod its own claim), or set replicaCount=1." $n) }}
{{- end }}
{{- if .Values.monitord.hostPort }}
{{- fail (printf "replicaCount %d (an HA zone) cannot use monitord.hostPort: only the leader's monitord works, and hypervisors told one node's IP would keep sending there after a failover. Set monitord.hostPort=false and reach monitord through its Service." $n) }}
{{- end }}
{{- if gt (mul (int .Values.ha.broadcastTimeoutMs) 4) (int .Values.ha.electionTimeoutMs) }}
{{- fail (printf "ha.broadcastTimeoutMs (%d) is more than a quarter of ha.electionTimeoutMs (%d): followers would start elections between two heartbeats. Keep it at most a quarter, e.g. 250 and 2000." (int .Values.ha.broadcastTimeoutMs) (int .Values.ha.electionTimeoutMs)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
After a SIGTERM during `onedb upgrade`, onerun lets onedb go on for the grace, stops it (SIGTERM,
SIGKILL 5 s later) and restores the backup, all before the kubelet's SIGKILL at
terminationGracePeriodSeconds; killed mid-restore, the next start refuses until `onerun restore`.
The restore is allowed 30 s, an allowance rather than a measurement: above both the backup
(1.6 s) and the whole upgrade (18 s) of the largest database measured (docs/upgrades.md).
Unset, onerun's 20 s always fits: the schema requires a grace period of at least 70 s.
*/}}
{{- define "opennebula.validateUpgradeStopGrace" -}}
{{- $grace := .Values.opennebula.upgradeStopGraceSeconds }}
{{- if not (kindIs "invalid" $grace) }}
{{- $period := float64 .Values.terminationGracePeriodSeconds }}
{{- $needed := addf $grace 5.0 30.0 }}
{{- if ge $needed $period }}
{{- fail (printf "opennebula.upgradeStopGraceSeconds (%v s) leaves no room within terminationGracePeriodSeconds (%v s): after the grace onerun stops onedb (up to 5 s) and restores the backup (allow 30 s), %v s in all, so the kubelet would SIGKILL the pod mid-restore and the next start would refuse until `onerun restore`. Lower opennebula.upgradeStopGraceSeconds below %v, or raise terminationGracePeriodSeconds above %v." $grace .Values.terminationGracePeriodSeconds $needed (subf $period 35.0) $needed) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express (it sees values, not the chart). Included by the StatefulSet so
every render runs them.
*/}}
{{- define "opennebula.validate" -}}
{{- include "opennebula.validateConfig" . }}
{{- include "opennebula.validateHa" . }}
{{- $deadline := float64 .Values.opennebula.probes.deadlineSeconds }}
{{- range $name := list "startup" "readiness" "liveness" }}
{{- $probe := index $.Values.opennebula.probes $name }}
{{- if lt (float64 $probe.timeoutSeconds) (addf $deadline 1.0) }}
{{- fail (printf "opennebula.probes.%s.timeoutSeconds (%v) must be at least opennebula.probes.deadlineSeconds + 1 (%v): the kubelet would kill the probe before it can answer." $name $probe.timeoutSeconds (addf $deadline 1.0)) }}
{{- end }}
{{- end }}
{{- $startup := .Values.opennebula.probes.startup }}
{{- $budget := mul $startup.periodSeconds $startup.failureThreshold }}
{{- $floor := add .Values.opennebula.dbWaitTimeoutSeconds 60 }}
{{- if and (ne .Values.database.type "sqlite") (lt (int64 $budget) (int64 $floor)) }}
{{- fail (printf "opennebula.probes.startup budget (periodSeconds x failureThreshold = %d s) is below opennebula.dbWaitTimeoutSeconds + 60 (%d s): the kubelet would restart the pod while onerun still waits for the database, before a backup, schema upgrade or oned start could run. Raise opennebula.probes.startup.failureThreshold (recommended: dbWaitTimeoutSeconds + 600 s in total) or lower dbWaitTimeoutSeconds." (int64 $budget) (int64 $floor)) }}
{{- end }}
{{- include "opennebula.validateUpgradeStopGrace" . }}
{{- range .Values.extraEnv }}
{{- if has .name (list "ONEADMIN_PASSWORD" "DB_PASSWORD" "ONE_KEY") }}
{{- fail (printf "extraEnv must not set %s: secrets in plain environment variables leak into `kubectl describe` and child processes. The chart already passes it as %s_FILE from a Secret (see opennebula.existingSecret and database.*.existingSecret)." .name .name) }}
{{- end }}
{{- end }}
{{- if .Values.opennebula.probes.grpc.enabled }}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if and (regexMatch "^v?[0-9]+\\.[0-9]+(\\.[0-9]+)?([-+].*)?$" $tag) (semverCompare "<7.2.0-0" $tag) }}
{{- fail (printf "opennebula.probes.grpc.enabled needs OpenNebula 7.2 or later (image tag %s): oned serves gRPC health only from 7.2. Set it to false." $tag) }}
{{- end }}
{{- if .Values.opennebula.maintenance }}
{{- fail "opennebula.probes.grpc.enabled cannot be combined with opennebula.maintenance: no oned runs in maintenance mode, so a gRPC startup probe would never pass. Set probes.grpc.enabled to false while in maintenance." }}
{{- end }}
{{- end }}
{{- end }}

{{/*
opennebula.config keys onerun always refuses because the chart already sets them: caught here so
a bad value fails `helm install` instead of crash-looping the pod. Case-insensitive, as oned
reads attribute names.
*/}}
{{- define "opennebula.validateConfig" -}}
{{- $on := .Values.opennebula }}
{{- $config := $on.config | default dict }}
{{- $oned := $config.oned | default dict }}
{{- range $key, $_ := $oned }}
{{- if eq (upper $key) "DB" }}
{{- fail (printf "opennebula.config.oned.%s: the DB vector is built by onerun from database.* (DB_* variables). Remove it and use database.type and database.mariadb / database.external." $key) }}
{{- end }}
{{- if and (eq (upper $key) "HOSTNAME") (ne (lower $on.hostname) "auto") }}
{{- fail (printf "opennebula.config.oned.%s: the chart always sets OPENNEBULA_HOSTNAME. Remove it and set opennebula.hostname instead." $key) }}
{{- end }}
{{- end }}
{{- /* The monitor address is "auto" only when it is asked for, directly or through hostname. */}}
{{- $monitorAuto := eq (lower $on.monitorAddress) "auto" }}
{{- if and (not $on.monitorAddress) (not .Values.monitord.hostPort) (not (and (eq .Values.monitord.service.type "LoadBalancer") .Values.monitord.service.loadBalancerIP)) }}
{{- $monitorAuto = eq (lower $on.hostname) "auto" }}
{{- end }}
{{- if not $monitorAuto }}
{{- $monitord := $config.monitord | default dict }}
{{- range $key, $network := $monitord }}
{{- if eq (upper $key) "NETWORK" }}
{{- range $vector := (kindIs "slice" $network | ternary $network (list $network)) }}
{{- if kindIs "map" $vector }}
{{- range $attr, $_ := $vector }}
{{- if eq (upper $attr) "MONITOR_ADDRESS" }}
{{- fail (printf "opennebula.config.monitord.%s.%s: the chart always sets OPENNEBULA_MONITOR_ADDRESS. Remove it and set opennebula.monitorAddress instead." $key $attr) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
