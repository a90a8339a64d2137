#!/usr/bin/env bash
# Set up MPR's gcp executor in a Google Cloud project: bucket, HMAC key, service accounts with
# least privilege, secrets, the task image and the Cloud Run Job. Safe to run again (idempotent).
#
#   PROJECT_ID=my-project REGION=europe-west1 BUCKET=my-project-mpr-media \
#   MPR_PUBLIC_URL=https://mpr.example.com ./deploy/gcp/setup.sh
#
# Optional: JOB (default mpr-transcode), PARALLELISM (10), TAG (latest), MPR_CALLBACK_SECRET
# (default: a new random one). Run from the repository root; needs gcloud (logged in) and openssl.
# At the end it prints the environment for the MPR server (MPR_EXECUTOR=gcp, ...).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
: "${REGION:?set REGION, e.g. europe-west1}"
: "${BUCKET:?set BUCKET, the media bucket name}"
: "${MPR_PUBLIC_URL:?set MPR_PUBLIC_URL, the https URL where Cloud Run tasks reach MPR}"
JOB="${JOB:-mpr-transcode}"
PARALLELISM="${PARALLELISM:-10}"
TAG="${TAG:-latest}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT_ID}/mpr/mpr-task:${TAG}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"

STORAGE_SA="mpr-storage@${PROJECT_ID}.iam.gserviceaccount.com"  # owns the HMAC key: media read/write only
TASK_SA="mpr-task@${PROJECT_ID}.iam.gserviceaccount.com"        # runs the tasks: reads three secrets, nothing else
API_SA="mpr-api@${PROJECT_ID}.iam.gserviceaccount.com"          # the MPR server: runs/reads/cancels this one job

gcloud config set project "${PROJECT_ID}" >/dev/null
gcloud services enable run.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com \
    secretmanager.googleapis.com storage.googleapis.com iam.googleapis.com

# --- bucket: media in/ and out/; stale chunk scratch (out/_mpr/) deleted after 7 days ----------------
if ! gcloud storage buckets describe "gs://${BUCKET}" >/dev/null 2>&1; then
    gcloud storage buckets create "gs://${BUCKET}" --location="${REGION}" \
        --uniform-bucket-level-access --public-access-prevention
fi
LIFECYCLE="$(mktemp)"
CONTEXT="$(mktemp -d)"
trap 'rm -rf "${LIFECYCLE}" "${CONTEXT}" "${HERE}/job.rendered.yaml"' EXIT
cat >"${LIFECYCLE}" <<'JSON'
{"rule": [{"action": {"type": "Delete"}, "condition": {"age": 7, "matchesPrefix": ["out/_mpr/"]}}]}
JSON
gcloud storage buckets update "gs://${BUCKET}" --lifecycle-file="${LIFECYCLE}"

# --- service accounts ------------------------------------------------------------------------------
for sa in mpr-storage mpr-task mpr-api; do
    gcloud iam service-accounts describe "${sa}@${PROJECT_ID}.iam.gserviceaccount.com" >/dev/null 2>&1 ||
        gcloud iam service-accounts create "${sa}" --display-name="MPR ${sa#mpr-}"
done
# objects only (get/list/create/delete), on this bucket only
gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
    --member="serviceAccount:${STORAGE_SA}" --role=roles/storage.objectUser >/dev/null

# --- secrets: HMAC key (GCS's S3 API) and the callback signing secret -------------------------------
put_secret() {  # name, value (from stdin)
    if gcloud secrets describe "$1" >/dev/null 2>&1; then
        gcloud secrets versions add "$1" --data-file=-
    else
        gcloud secrets create "$1" --replication-policy=automatic --data-file=-
    fi
}
if ! gcloud secrets describe mpr-gcs-hmac-id >/dev/null 2>&1; then
    read -r HMAC_ID HMAC_SECRET < <(gcloud storage hmac create "${STORAGE_SA}" \
        --format='value(metadata.accessId,secret)')
    printf %s "${HMAC_ID}" | put_secret mpr-gcs-hmac-id
    printf %s "${HMAC_SECRET}" | put_secret mpr-gcs-hmac-secret
fi
if ! gcloud secrets describe mpr-callback-secret >/dev/null 2>&1 || [ -n "${MPR_CALLBACK_SECRET:-}" ]; then
    printf %s "${MPR_CALLBACK_SECRET:-$(openssl rand -hex 32)}" | put_secret mpr-callback-secret
fi
for secret in mpr-gcs-hmac-id mpr-gcs-hmac-secret mpr-callback-secret; do
    gcloud secrets add-iam-policy-binding "${secret}" \
        --member="serviceAccount:${TASK_SA}" --role=roles/secretmanager.secretAccessor >/dev/null
done

# --- the task image ----------------------------------------------------------------------------------
gcloud artifacts repositories describe mpr --location="${REGION}" >/dev/null 2>&1 ||
    gcloud artifacts repositories create mpr --repository-format=docker --location="${REGION}"
# upload only what the image needs (not .venv, media or node_modules)
tar -C "${ROOT}" --exclude=__pycache__ --exclude='*.egg-info' --exclude=tests -cf - \
    pyproject.toml README.md mpr plugins/mpr_storage_s3 plugins/mpr_gcp deploy/gcp/Dockerfile | tar -C "${CONTEXT}" -xf -
gcloud builds submit "${CONTEXT}" --config="${HERE}/cloudbuild.yaml" --substitutions="_IMAGE=${IMAGE}"

# --- the Cloud Run Job -------------------------------------------------------------------------------
sed -e "s|\${JOB}|${JOB}|g" -e "s|\${REGION}|${REGION}|g" -e "s|\${PROJECT_ID}|${PROJECT_ID}|g" \
    -e "s|\${IMAGE}|${IMAGE}|g" -e "s|\${PARALLELISM}|${PARALLELISM}|g" \
    "${HERE}/job.yaml" >"${HERE}/job.rendered.yaml"
gcloud run jobs replace "${HERE}/job.rendered.yaml" --region="${REGION}"

# --- what the MPR server may do: run this job with overrides, read and cancel its executions ---------
PERMISSIONS=run.jobs.run,run.jobs.runWithOverrides,run.executions.get,run.executions.cancel
if gcloud iam roles describe mprJobDispatcher --project="${PROJECT_ID}" >/dev/null 2>&1; then
    gcloud iam roles update mprJobDispatcher --project="${PROJECT_ID}" --permissions="${PERMISSIONS}" --quiet
else
    gcloud iam roles create mprJobDispatcher --project="${PROJECT_ID}" --title="MPR job dispatcher" \
        --permissions="${PERMISSIONS}" --stage=GA
fi
gcloud run jobs add-iam-policy-binding "${JOB}" --region="${REGION}" \
    --member="serviceAccount:${API_SA}" --role="projects/${PROJECT_ID}/roles/mprJobDispatcher" >/dev/null

cat <<ENV

Done. Run the MPR server as ${API_SA} (Application Default Credentials) with:

  MPR_EXECUTOR=gcp
  MPR_GCP_JOB=projects/${PROJECT_ID}/locations/${REGION}/jobs/${JOB}
  MPR_GCP_MAX_RETRIES=3
  MEDIA_IN=gs://${BUCKET}/in
  MEDIA_OUT=gs://${BUCKET}/out
  MPR_GS_ACCESS_KEY_ID=\$(gcloud secrets versions access latest --secret=mpr-gcs-hmac-id)
  MPR_GS_SECRET_ACCESS_KEY=\$(gcloud secrets versions access latest --secret=mpr-gcs-hmac-secret)
  MPR_CALLBACK_SECRET=\$(gcloud secrets versions access latest --secret=mpr-callback-secret)
  MPR_PUBLIC_URL=${MPR_PUBLIC_URL}
ENV
