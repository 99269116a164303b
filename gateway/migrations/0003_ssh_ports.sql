-- Each notebook with SSH on gets a port of its own (user ma-user), kept for its lifetime.
ALTER TABLE notebooks ADD COLUMN ssh_port INTEGER;
CREATE UNIQUE INDEX notebooks_ssh_port ON notebooks (ssh_port) WHERE ssh_port IS NOT NULL;
