// Validate custom resources (a JSON array on stdin) against the validators generated from their
// CRD schemas. Prints a JSON array of "Kind/name: error" strings; exits 0 either way.
// CRD_MODELS: the folder holding node_modules (scripts/get-crd-validators.sh installs it).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const root = process.env.CRD_MODELS;
const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
};
const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const where = `${doc.kind}/${doc.metadata?.name}`;
  if (!MODELS[key]) {
    errors.push(`${where}: no validator for ${key}`);
    continue;
  }
  const module = await import(pathToFileURL(`${root}/node_modules/${MODELS[key]}`).href);
  try {
    new module[doc.kind](doc).validate();
  } catch (err) {
    errors.push(`${where}: ${err.message}`);
  }
}
process.stdout.write(JSON.stringify(errors));
