-- STAND-IN for the seed project's existing `detection_history` table, kept only so that tests and
-- fresh local databases have the table the real Supabase project already has. On the production
-- project this migration is already applied (the table exists) and `IF NOT EXISTS` makes it a no-op.
-- The columns mirror the seed: one row per analysed file, 0-100 confidence, created_at default now().
CREATE TABLE IF NOT EXISTS public.detection_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    file_url text,
    file_type text,
    detection_result text,
    confidence_score decimal(5, 2),
    created_at timestamptz DEFAULT now()
);
