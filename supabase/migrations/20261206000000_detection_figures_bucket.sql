-- Evidence figures of each detection (PNG: face heatmap, lip-sync curve, voice spectrogram, timeline, summary).
-- They live in Storage beside the detection_history row, never in it; the service writes them with the
-- service-role key (service/figures.py, FIGURES_BUCKET) and serves them to the row's owner through its API.
-- Plain PostgreSQL (the direct-Postgres backend, tests) has no Storage schema: there the service keeps the
-- figures on disk and this migration does nothing.
do $$
begin
  if exists (select 1 from information_schema.tables where table_schema = 'storage' and table_name = 'buckets') then
    insert into storage.buckets (id, name, public)
    values ('detection-figures', 'detection-figures', false)
    on conflict (id) do nothing;
  end if;
end
$$;
