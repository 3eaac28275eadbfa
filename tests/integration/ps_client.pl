#!/usr/bin/perl
# A MariaDB Connector/C client with server-side prepared statements (DBD::MariaDB, mariadb_server_prepare),
# driven line by line from a test: "once" prepares, executes and closes a statement (as Go's driver does for
# each query); "keep" prepares one and keeps it open; "exec" executes the kept one; "ins N" inserts N into
# ps_w with a statement prepared once and kept; "id" prints the connection id and the server's port. Each
# answer is one line: "ok ...", or "error: ...".
use strict;
use warnings;
use DBI;

$| = 1;
my ($port) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=test;host=127.0.0.1;port=$port;mariadb_server_prepare=1", "test",
                       "test", {RaiseError => 1, PrintError => 0, AutoCommit => 1});
my ($kept, $ins);
print "ok connected\n";
while (my $line = <STDIN>) {
    chomp $line;
    my $out = eval {
        if ($line eq "once") {
            my $sth = $dbh->prepare("SELECT ? + 1");
            $sth->execute(41);
            my ($v) = $sth->fetchrow_array;
            $sth->finish;
            undef $sth;    # COM_STMT_CLOSE
            "ok $v";
        } elsif ($line eq "keep") {
            $kept = $dbh->prepare("SELECT ? * 2");
            "ok kept";
        } elsif ($line eq "exec") {
            $kept->execute(21);
            my ($v) = $kept->fetchrow_array;
            $kept->finish;
            "ok $v";
        } elsif ($line =~ /^ins (\d+)$/) {
            $ins //= $dbh->prepare("INSERT INTO ps_w (n) VALUES (?)");
            $ins->execute($1);
            "ok";
        } elsif ($line eq "id") {
            my ($id, $p) = $dbh->selectrow_array("SELECT CONNECTION_ID(), \@\@port");
            "ok $id $p";
        } else {
            "error: unknown command $line";
        }
    };
    if (!defined $out) {
        my $e = $@;
        $e =~ s/\s+/ /g;
        $out = "error: $e";
    }
    print "$out\n";
}
