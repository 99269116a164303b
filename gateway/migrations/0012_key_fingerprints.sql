-- A public key belongs to one user: the SSH front door finds the user by the offered key's
-- fingerprint. Not UNIQUE: databases from before may hold one key under several users, and
-- nothing of theirs is deleted; the gateway refuses new duplicates (in the write transaction
-- that inserts the key pair) and lets such a key log in nowhere at the shared port until
-- all but one of them remove it.
CREATE INDEX key_pairs_fingerprint ON key_pairs (fingerprint);
