<?php
// A shop closing an order: the order row and its order.closed event in one transaction.
// Usage: php close_order.php REFERENCE CUSTOMER_ID [fail]   (fail: the payment fails
// after both inserts, and the transaction is rolled back: no order, no event).
// SHOP_DSN, SHOP_USER, SHOP_PASSWORD: the shop database (PDO).
declare(strict_types=1);
require __DIR__ . '/lethe.php';

[$_, $reference, $customer] = $argv;
$fail = ($argv[3] ?? '') === 'fail';
$db = new PDO(getenv('SHOP_DSN'), getenv('SHOP_USER') ?: 'root', getenv('SHOP_PASSWORD') ?: '',
              [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$db->beginTransaction();
try {
    $db->prepare('INSERT INTO ps_orders (reference, id_customer, date_add) VALUES (?, ?, NOW())')
       ->execute([$reference, (int) $customer]);
    lethe_outbox($db, "order.closed:$reference", 'order.closed', "customer:$customer",
                 ['order' => $reference]);
    if ($fail) {
        throw new RuntimeException('payment refused');
    }
    $db->commit();
    echo "committed $reference\n";
} catch (Throwable $e) {
    $db->rollBack();
    echo "rolled back $reference: {$e->getMessage()}\n";
    exit(1);
}
