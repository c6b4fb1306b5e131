{{/* Names, labels and the pieces every pod of the chart shares. */}}

{{- define "sandbox.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sandbox.api.name" -}}{{ include "sandbox.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end -}}
{{- define "sandbox.operator.name" -}}{{ include "sandbox.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "sandbox.keys.name" -}}{{ include "sandbox.fullname" . | trunc 54 | trimSuffix "-" }}-api-keys{{- end -}}
{{- define "sandbox.keys.secret" -}}{{ .Values.api.keys.existingSecret | default (include "sandbox.keys.name" .) }}{{- end -}}
{{- define "sandbox.languages.name" -}}{{ include "sandbox.fullname" . | trunc 53 | trimSuffix "-" }}-languages{{- end -}}

{{- define "sandbox.labels" -}}
app.kubernetes.io/part-of: code-sandbox
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sandbox.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .component }}
{{- end -}}

{{- define "sandbox.image" -}}
{{- $image := index .root.Values.images .component -}}
{{ $image.repository }}:{{ $image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Restricted Pod Security, at pod level: non-root, RuntimeDefault seccomp. */}}
{{- define "sandbox.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security, per container: nothing to escalate to, nothing writable but mounts. */}}
{{- define "sandbox.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The service account token, mounted only into the container that calls the Kubernetes API.
     3607 s is the lifetime automounted tokens get, so the API server treats it the same way. */}}
{{- define "sandbox.kubeApiTokenVolume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end -}}

{{- define "sandbox.kubeApiTokenMount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end -}}

{{/* Egress to the Kubernetes API only: the addresses from values, else those behind the
     `kubernetes` Service as the cluster reports them at install time, else any address on the
     API server's ports (rendering offline, e.g. hack/render-manifests.sh). */}}
{{- define "sandbox.kubeApiEgress" -}}
{{- $cidrs := .Values.kubernetesApi.cidrs -}}
{{- if not $cidrs -}}
{{- $slices := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "" -}}
{{- range ($slices.items | default list) -}}
{{- if eq (index (.metadata.labels | default dict) "kubernetes.io/service-name" | default "") "kubernetes" -}}
{{- range .endpoints -}}
{{- range .addresses -}}
{{- $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
- ports:
  {{- range .Values.kubernetesApi.ports }}
    - protocol: TCP
      port: {{ . }}
  {{- end }}
  {{- with $cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Sandbox settings both components must agree on, as SANDBOX_* variables. */}}
{{- define "sandbox.sharedEnv" -}}
{{- range $name, $value := .Values.limits }}
- name: SANDBOX_{{ $name | snakecase | upper }}
  value: {{ $value | quote }}
{{- end }}
{{- if .Values.languages }}
- name: SANDBOX_LANGUAGES_FILE
  value: /etc/sandbox/languages/languages.yaml
{{- end }}
{{- end -}}

{{/* The catalogue of the `languages` value, mounted only when given (else the images' own is read);
     empty when not: include it through `with`. */}}
{{- define "sandbox.languagesMount" -}}
{{- if .Values.languages -}}
- {name: languages, mountPath: /etc/sandbox/languages, readOnly: true}
{{- end -}}
{{- end -}}

{{- define "sandbox.languagesVolume" -}}
{{- if .Values.languages -}}
- name: languages
  configMap:
    name: {{ include "sandbox.languages.name" . }}
{{- end -}}
{{- end -}}

{{/* The two image checks our pods fail on purpose, with the reason next to the value causing them. */}}
{{- define "sandbox.checkovImageSkips" -}}
checkov.io/skip1: CKV_K8S_15=imagePullPolicy IfNotPresent - clusters without a registry run imported images, which Always could not pull
checkov.io/skip2: CKV_K8S_43=versioned tags, never latest - images imported without a registry have no registry digest to pin
{{- end -}}
