{{/*
The refit Job template (a CronJob's jobTemplate: metadata and Job spec with its pod template), rendered once for
the nightly CronJob (cronjob.yaml) and for the ConfigMap the API builds each prior schedule's CronJob from
(template-configmap.yaml; the API sets only the refit container's args). Called with a dict:
  root       the chart's top-level context
  args       the refit container's args
  managedBy  the app.kubernetes.io/managed-by label of the Jobs and pods (Helm, or chainyard for the API's)
*/}}
{{- define "chainyard.refit.jobTemplate" -}}
{{- $root := .root -}}
{{- $labels := include "chainyard.labels" $root | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/component" "refit" -}}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .managedBy -}}
metadata:
  labels:
    {{- toYaml $labels | nindent 4 }}
spec:
  backoffLimit: {{ $root.Values.refit.backoffLimit }}
  activeDeadlineSeconds: {{ $root.Values.refit.activeDeadlineSeconds }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $root.Values.refit.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- toYaml $labels | nindent 8 }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      restartPolicy: Never
      # `chainyard refit` only queues refit jobs in Redis (the workers sample them): no Kubernetes API token
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: refit
          image: "{{ $root.Values.image.registry }}/{{ $root.Values.image.repository }}{{ if $root.Values.image.digest }}@{{ $root.Values.image.digest }}{{ else }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}{{ end }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          envFrom:
            - configMapRef:
                name: {{ include "chainyard.fullname" $root }}
          {{- if or (and (not $root.Values.redis.enabled) $root.Values.externalRedis.existingSecret) $root.Values.refit.extraEnv }}
          env:
            {{- if and (not $root.Values.redis.enabled) $root.Values.externalRedis.existingSecret }}
            - name: CHAINYARD_REDIS_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.externalRedis.existingSecret }}
                  key: {{ $root.Values.externalRedis.existingSecretKey }}
            {{- end }}
            {{- with $root.Values.refit.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $root.Values.refit.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
      {{- with $root.Values.refit.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.refit.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.refit.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
