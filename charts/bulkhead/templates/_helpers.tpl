{{/* The chart's name, cut to 63 characters (a label value's limit). */}}
{{- define "bulkhead.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart's name unless it already holds it. */}}
{{- define "bulkhead.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The bulkhead version installed: values.version, else the chart's appVersion. */}}
{{- define "bulkhead.version" -}}
{{- .Values.version | default .Chart.AppVersion -}}
{{- end -}}

{{/* The installer image: repository@digest, else repository:tag (tag defaults to the version). */}}
{{- define "bulkhead.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (include "bulkhead.version" .)) -}}
{{- end -}}
{{- end -}}

{{- define "bulkhead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulkhead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-installer
{{- end -}}

{{- define "bulkhead.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/version: {{ include "bulkhead.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bulkhead.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "bulkhead.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
Checks across values that values.schema.json cannot express. The installer
runs `bulkhead config check` on the node as well, before it changes anything.
*/}}
{{- define "bulkhead.validate" -}}
{{- $c := .Values.config -}}
{{- if eq (clean $c.root) (clean $c.state) -}}
{{- fail (printf "config.state (%s) must not be config.root: they must be different directories" $c.state) -}}
{{- end -}}
{{- if ne (empty $c.streaming.tls_cert_file) (empty $c.streaming.tls_key_file) -}}
{{- fail "config.streaming.tls_cert_file and config.streaming.tls_key_file must be given together" -}}
{{- end -}}
{{- end -}}

{{/*
/etc/bulkhead/config.toml. Strings are written with toJson: a JSON string is
a valid TOML basic string (the same escapes), and so is a list of them.
*/}}
{{- define "bulkhead.configToml" -}}
{{- $c := .Values.config -}}
# bulkhead configuration (/etc/bulkhead/config.toml), rendered by the Helm
# chart {{ .Chart.Name }}-{{ .Chart.Version }}, release {{ .Release.Namespace }}/{{ .Release.Name }}.
# Change the release's values (config.*), not this file: the installer
# replaces it. `bulkhead config default` documents every key.
root = {{ $c.root | toJson }}
state = {{ $c.state | toJson }}
socket = {{ $c.socket | toJson }}
shutdown_timeout_seconds = {{ $c.shutdown_timeout_seconds | int64 }}

[log]
level = {{ $c.log.level | toJson }}
format = {{ $c.log.format | toJson }}

[metrics]
address = {{ $c.metrics.address | toJson }}

[runtime]
cgroup_driver = {{ $c.runtime.cgroup_driver | toJson }}

[image]
plain_http_registries = {{ $c.image.plain_http_registries | toJson }}
pull_progress_timeout_seconds = {{ $c.image.pull_progress_timeout_seconds | int64 }}
max_concurrent_downloads = {{ $c.image.max_concurrent_downloads | int64 }}
{{- /* The installer writes registryCredentials' Secret there. */}}
auth_file = {{ if .Values.registryCredentials.existingSecret }}"/etc/bulkhead/auth.json"{{ else }}""{{ end }}
pinned_images = {{ $c.image.pinned_images | toJson }}
{{- if not $c.image.registries }}
registries = []
{{- end }}
{{- range $c.image.registries }}

[[image.registries]]
registry = {{ .registry | toJson }}
mirrors = {{ .mirrors | default list | toJson }}
{{- if .ca_file }}
ca_file = {{ .ca_file | toJson }}
{{- end }}
skip_verify = {{ .skip_verify | default false }}
{{- end }}

[network]
{{- if eq $c.network.mode "native" }}
# network.mode native: bulkhead networks pods itself in pod_cidr. cni_conf_dir
# names a directory that nothing writes to, so that a network add-on's
# configuration in /etc/cni/net.d does not switch bulkhead to CNI.
pod_cidr = {{ $c.network.pod_cidr | toJson }}
{{- else }}
# network.mode cni: the CNI plugins configured in cni_conf_dir network pods;
# no pod CIDR of bulkhead's own.
pod_cidr = ""
{{- end }}
bridge = {{ $c.network.bridge | toJson }}
mtu = {{ $c.network.mtu | int64 }}
{{- if eq $c.network.mode "native" }}
cni_conf_dir = "/etc/bulkhead/native-mode-no-cni"
{{- else }}
cni_conf_dir = {{ $c.network.cni_conf_dir | toJson }}
{{- end }}
cni_bin_dirs = {{ $c.network.cni_bin_dirs | toJson }}
cni_timeout_seconds = {{ $c.network.cni_timeout_seconds | int64 }}

[streaming]
address = {{ $c.streaming.address | toJson }}
tls_cert_file = {{ $c.streaming.tls_cert_file | toJson }}
tls_key_file = {{ $c.streaming.tls_key_file | toJson }}
stream_creation_timeout_seconds = {{ $c.streaming.stream_creation_timeout_seconds | int64 }}
stream_idle_timeout_seconds = {{ $c.streaming.stream_idle_timeout_seconds | int64 }}
{{- end -}}
