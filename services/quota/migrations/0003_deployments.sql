-- Deployments: the members of a deployment (or of its scaling up) are decided as one unit, each
-- with its own ledger entry that names the deployment. An approved member is launched by the
-- scheduler's orchestrator, so quota admits no launch of its own for it.
ALTER TABLE ledger ADD COLUMN deployment_id uuid;
CREATE INDEX ledger_deployment ON ledger (deployment_id) WHERE deployment_id IS NOT NULL;
