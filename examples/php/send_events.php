<?php
// A hosted shop's webhook handler, as the tests run it: sends events to the intake.
// Usage: php send_events.php EVENTS.json   (a JSON array of events)
// LETHE_INTAKE_URL (e.g. http://127.0.0.1:8001), LETHE_INTAKE_TOKEN: the intake's.
declare(strict_types=1);
require __DIR__ . '/lethe.php';

$events = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
[$status, $answer] = lethe_send(getenv('LETHE_INTAKE_URL'), getenv('LETHE_INTAKE_TOKEN'),
                                $events);
echo json_encode(['status' => $status, 'answer' => $answer]), "\n";
exit($status === 202 ? 0 : 1);
