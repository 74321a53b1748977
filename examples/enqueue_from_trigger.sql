-- Enqueue a job from a table trigger: every new signup gets a welcome email.
-- The job is inserted in the same transaction as the signup, so it exists exactly when the
-- signup commits; a rolled-back signup leaves no job and wakes no worker.
-- The worker side is examples/enqueue_from_trigger.py (task "emails.send_welcome").

CREATE TABLE signups (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email  text NOT NULL
);

CREATE FUNCTION signups_enqueue_welcome() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgqueue.enqueue(
        'emails.send_welcome',
        jsonb_build_array(NEW.email),
        queue => 'emails',
        unique_key => 'welcome-' || NEW.id   -- never two welcome emails for one signup
    );
    RETURN NEW;
END;
$$;

CREATE TRIGGER signups_enqueue_welcome
    AFTER INSERT ON signups
    FOR EACH ROW EXECUTE FUNCTION signups_enqueue_welcome();
