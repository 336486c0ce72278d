-- Multimodal detection results and the task lifecycle on the EXISTING `detection_history` table.
--
-- Backward compatible and idempotent (safe to run twice, safe on plain PostgreSQL):
--   * only ADD COLUMN IF NOT EXISTS; the seed's columns keep their meaning and vocabulary
--     (detection_result: pending | processing | authentic | suspicious | fake | not_applicable | failed,
--      confidence_score: 0-100 with 2 decimals);
--   * old rows read back with detector_scores = model_metadata = '{}' and status = 'completed';
--   * Supabase's roles and auth.uid() are used as they are; on plain PostgreSQL (tests, self-hosting)
--     stand-ins are created ONLY when missing.
-- The queue of the API lives in this table: status pending -> processing -> completed | failed.

-- The table itself (a no-op on the seed project, where it exists).
CREATE TABLE IF NOT EXISTS public.detection_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    file_url text,
    file_type text,
    detection_result text,
    confidence_score decimal(5, 2),
    created_at timestamptz DEFAULT now()
);

ALTER TABLE public.detection_history
    ADD COLUMN IF NOT EXISTS detector_scores jsonb DEFAULT '{}'::jsonb,   -- Report.detector_scores()
    ADD COLUMN IF NOT EXISTS model_metadata jsonb DEFAULT '{}'::jsonb,    -- Report.model_metadata()
    ADD COLUMN IF NOT EXISTS report_summary jsonb DEFAULT '{}'::jsonb,    -- the rest of Report.to_dict()
    ADD COLUMN IF NOT EXISTS task_id text,
    ADD COLUMN IF NOT EXISTS status text DEFAULT 'completed',
    ADD COLUMN IF NOT EXISTS stage text,
    ADD COLUMN IF NOT EXISTS progress real,
    ADD COLUMN IF NOT EXISTS reason text,
    ADD COLUMN IF NOT EXISTS error_code text,
    ADD COLUMN IF NOT EXISTS source_url text,
    ADD COLUMN IF NOT EXISTS source_name text,
    ADD COLUMN IF NOT EXISTS storage_path text,
    ADD COLUMN IF NOT EXISTS content_sha256 text,
    ADD COLUMN IF NOT EXISTS api_key_id text,                              -- sha256 prefix of the key, never the key
    ADD COLUMN IF NOT EXISTS callback_url text,
    ADD COLUMN IF NOT EXISTS callback_attempts integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS callback_last_status integer,
    ADD COLUMN IF NOT EXISTS callback_last_error text,
    ADD COLUMN IF NOT EXISTS callback_delivered_at timestamptz,
    ADD COLUMN IF NOT EXISTS attempts integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_from text,
    ADD COLUMN IF NOT EXISTS started_at timestamptz,
    ADD COLUMN IF NOT EXISTS completed_at timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now();

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'detection_history_status_check'
                   AND conrelid = 'public.detection_history'::regclass) THEN
        ALTER TABLE public.detection_history ADD CONSTRAINT detection_history_status_check
            CHECK (status IN ('pending', 'processing', 'completed', 'failed'));
    END IF;
END
$do$;

CREATE UNIQUE INDEX IF NOT EXISTS detection_history_task_id_key ON public.detection_history (task_id);
CREATE INDEX IF NOT EXISTS detection_history_detector_scores_gin
    ON public.detection_history USING gin (detector_scores);
CREATE INDEX IF NOT EXISTS detection_history_queue_idx
    ON public.detection_history (status, created_at) WHERE status IN ('pending', 'processing');
CREATE INDEX IF NOT EXISTS detection_history_sha256_idx
    ON public.detection_history (content_sha256) WHERE status = 'completed';
CREATE INDEX IF NOT EXISTS detection_history_quota_idx ON public.detection_history (api_key_id, created_at);
CREATE INDEX IF NOT EXISTS detection_history_user_idx ON public.detection_history (user_id, created_at DESC);

-- updated_at is the heartbeat of a processing job: every UPDATE refreshes it with the database clock
-- unless the statement sets it explicitly (so one clock decides staleness, whatever the client's).
CREATE OR REPLACE FUNCTION public.detection_history_touch() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$fn$;
DROP TRIGGER IF EXISTS detection_history_touch ON public.detection_history;
CREATE TRIGGER detection_history_touch BEFORE UPDATE ON public.detection_history
    FOR EACH ROW EXECUTE FUNCTION public.detection_history_touch();

-- ---------------------------------------------------------------------------------------------------
-- Supabase stand-ins (plain PostgreSQL only: each is created when missing, never replaced)
-- ---------------------------------------------------------------------------------------------------
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT;  -- Supabase's has BYPASSRLS; here the policy grants it
    END IF;
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
    IF to_regprocedure('auth.uid()') IS NULL THEN
        -- Same contract as Supabase's: the `sub` claim of the request's JWT, NULL without one.
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT nullif(coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                                   nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'),
                          '')::uuid
        $f$;
    END IF;
END
$do$;

-- ---------------------------------------------------------------------------------------------------
-- Row level security: the service (service_role key) writes everything; a signed-in user reads own rows.
-- ---------------------------------------------------------------------------------------------------
GRANT SELECT ON public.detection_history TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.detection_history TO service_role;
ALTER TABLE public.detection_history ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS "service role manages detections" ON public.detection_history;
CREATE POLICY "service role manages detections" ON public.detection_history
    FOR ALL TO service_role USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS "users read own detections" ON public.detection_history;
CREATE POLICY "users read own detections" ON public.detection_history
    FOR SELECT TO authenticated USING (auth.uid() = user_id);

-- ---------------------------------------------------------------------------------------------------
-- Queue operations that must be atomic. The direct-Postgres backend calls them with SELECT, the
-- Supabase backend through PostgREST (POST /rest/v1/rpc/<name>); only service_role may execute them.
-- ---------------------------------------------------------------------------------------------------

-- Insert one job row (jsonb with any of the table's columns). With p_daily_limit > 0 the row is only
-- inserted while its api_key_id has fewer than p_daily_limit rows since UTC midnight; the count and the
-- insert are serialised per key by an advisory lock. Returns the new row, or no row when over quota.
CREATE OR REPLACE FUNCTION public.detection_enqueue(p_row jsonb, p_daily_limit integer DEFAULT 0)
RETURNS SETOF public.detection_history
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $fn$
DECLARE
    r public.detection_history;
    n integer;
BEGIN
    r := jsonb_populate_record(NULL::public.detection_history, p_row);
    IF coalesce(p_daily_limit, 0) > 0 AND r.api_key_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('detection_quota:' || r.api_key_id, 0));
        SELECT count(*) INTO n FROM public.detection_history
         WHERE api_key_id = r.api_key_id
           AND created_at >= date_trunc('day', now() AT TIME ZONE 'utc') AT TIME ZONE 'utc';
        IF n >= p_daily_limit THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO public.detection_history (
        id, user_id, file_url, file_type, detection_result, confidence_score, created_at,
        detector_scores, model_metadata, report_summary, task_id, status, stage, progress, reason, error_code,
        source_url, source_name, storage_path, content_sha256, api_key_id, callback_url, callback_attempts,
        attempts, cached_from, started_at, completed_at, updated_at)
    VALUES (
        coalesce(r.id, gen_random_uuid()), r.user_id, r.file_url, r.file_type,
        coalesce(r.detection_result, coalesce(r.status, 'pending')), r.confidence_score, coalesce(r.created_at, now()),
        coalesce(r.detector_scores, '{}'::jsonb), coalesce(r.model_metadata, '{}'::jsonb),
        coalesce(r.report_summary, '{}'::jsonb), r.task_id, coalesce(r.status, 'pending'), r.stage, r.progress,
        r.reason, r.error_code, r.source_url, r.source_name, r.storage_path, r.content_sha256, r.api_key_id,
        r.callback_url, coalesce(r.callback_attempts, 0), coalesce(r.attempts, 0), r.cached_from, r.started_at,
        r.completed_at, coalesce(r.updated_at, now()))
    RETURNING * INTO r;
    RETURN NEXT r;
END
$fn$;

-- Claim the oldest pending job (or the given one) for processing: pending -> processing, attempts + 1.
-- SKIP LOCKED lets many workers claim concurrently without ever handing one job to two of them.
CREATE OR REPLACE FUNCTION public.detection_claim(p_task_id text DEFAULT NULL)
RETURNS SETOF public.detection_history
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $fn$
BEGIN
    RETURN QUERY
    UPDATE public.detection_history d
       SET status = 'processing', detection_result = 'processing', attempts = d.attempts + 1,
           stage = 'queued', progress = 0, started_at = now(), updated_at = now()
     WHERE d.id = (SELECT c.id FROM public.detection_history c
                    WHERE c.status = 'pending' AND (p_task_id IS NULL OR c.task_id = p_task_id)
                    ORDER BY c.created_at, c.id
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING d.*;
END
$fn$;

-- Jobs left `processing` without a heartbeat for p_stale_after_s seconds (their worker died): back to
-- pending, or failed with a reason once they used p_max_attempts attempts. Returns the rows it changed.
CREATE OR REPLACE FUNCTION public.detection_requeue_stale(p_stale_after_s double precision, p_max_attempts integer)
RETURNS SETOF public.detection_history
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $fn$
BEGIN
    RETURN QUERY
    UPDATE public.detection_history d
       SET status = CASE WHEN d.attempts >= p_max_attempts THEN 'failed' ELSE 'pending' END,
           detection_result = CASE WHEN d.attempts >= p_max_attempts THEN 'failed' ELSE 'pending' END,
           reason = CASE WHEN d.attempts >= p_max_attempts
                         THEN format('gave up after %s attempts: the worker stopped (crash, restart or timeout) '
                                     'before finishing', d.attempts)
                         ELSE d.reason END,
           error_code = CASE WHEN d.attempts >= p_max_attempts THEN 'worker_lost' ELSE d.error_code END,
           completed_at = CASE WHEN d.attempts >= p_max_attempts THEN now() ELSE NULL END,
           stage = NULL, progress = NULL, updated_at = now()
     WHERE d.id IN (SELECT s.id FROM public.detection_history s
                     WHERE s.status = 'processing'
                       AND s.updated_at < now() - make_interval(secs => p_stale_after_s)
                     FOR UPDATE SKIP LOCKED)
    RETURNING d.*;
END
$fn$;

REVOKE ALL ON FUNCTION public.detection_enqueue(jsonb, integer) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.detection_claim(text) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.detection_requeue_stale(double precision, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.detection_enqueue(jsonb, integer) TO service_role;
GRANT EXECUTE ON FUNCTION public.detection_claim(text) TO service_role;
GRANT EXECUTE ON FUNCTION public.detection_requeue_stale(double precision, integer) TO service_role;
